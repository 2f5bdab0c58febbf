"""Stand-in for EAC's src/main.py (see ../../README.md): parses its argv at import; main()
builds the training DataLoader first."""

import argparse

import torch
from dataset import RafDataset

parser = argparse.ArgumentParser()
parser.add_argument("--raf_path", required=True)
parser.add_argument("--label_path", default="noise01.txt")
parser.add_argument("--batch_size", type=int, default=32)
parser.add_argument("--workers", type=int, default=4)
args = parser.parse_args()


def main():
  train_dataset = RafDataset(args, phase="train")
  torch.utils.data.DataLoader(train_dataset, batch_size=args.batch_size, shuffle=True,
                              num_workers=args.workers, pin_memory=True)
  raise RuntimeError("the stand-in trains nothing")
