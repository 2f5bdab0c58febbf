"""Stand-in for EAC's src/loss.py (see ../../README.md)."""

import torch


def ACLoss(hm1, hm2, grid, output):
  """Mean squared difference of the maps and the flipped second maps."""
  del grid, output
  return torch.mean((hm1 - hm2.flip(3)) ** 2)
