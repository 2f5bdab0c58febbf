"""Stand-in for EAC's src/utils.py (see ../../README.md)."""

import torch


def generate_flip_grid(w, h, device):
  return torch.zeros(1, h, w, 2, device=device)


def setup_seed(seed):
  torch.manual_seed(seed)
