"""Stand-in for NCCTFER's model/resnet.py (see ../../README.md)."""

from torch import nn

WIDTH = 8


def res18feature(args):
  """Images -> pooled WIDTH-dim features."""
  del args
  return nn.Sequential(nn.Conv2d(3, WIDTH, 32, stride=32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten())
