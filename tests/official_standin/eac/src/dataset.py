"""Stand-in for EAC's src/dataset.py (see ../../README.md): a RAF-DB-layout folder's train
images at 224 px, as (image, label, index, flipped image)."""

import os

import cv2
import numpy as np
import torch


class RafDataset(torch.utils.data.Dataset):
  def __init__(self, args, phase):
    with open(os.path.join(args.raf_path, "EmoLabel", args.label_path)) as f:
      rows = [line.split() for line in f if line.startswith(phase)]
    self.paths = [os.path.join(args.raf_path, "Image", "aligned",
                               name.replace(".jpg", "_aligned.jpg")) for name, _ in rows]
    self.labels = [int(label) - 1 for _, label in rows]

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, idx):
    image = cv2.resize(cv2.imread(self.paths[idx])[:, :, ::-1], (224, 224))
    image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)) / 255.0).float()
    return image, self.labels[idx], idx, image.flip(2)
