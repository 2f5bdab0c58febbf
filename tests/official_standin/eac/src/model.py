"""Stand-in for EAC's src/model.py (see ../../README.md): ResNet, Bottleneck, Model(args)."""

import pickle

import torch
from torch import nn

WIDTH = 8


class Bottleneck(nn.Module):
  """Only named: ResNet takes it as its block type."""


class ResNet(nn.Module):
  """224 px -> a WIDTH x 7 x 7 map, whatever the block and layer counts."""

  def __init__(self, block, layers):
    super().__init__()
    del block, layers
    self.conv1 = nn.Conv2d(3, WIDTH, 32, stride=32, bias=False)
    self.bn1 = nn.BatchNorm2d(WIDTH)


class Model(nn.Module):
  """Reads its 'pretrained' weights from args.resnet50_path with open() and pickle.loads();
  forward gives (logits, class activation maps of every class)."""

  def __init__(self, args):
    super().__init__()
    resnet = ResNet(Bottleneck, [3, 4, 6, 3])
    with open(args.resnet50_path, "rb") as f:
      weights = pickle.loads(f.read())
    resnet.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    self.features = nn.Sequential(resnet.conv1, resnet.bn1, nn.ReLU())
    self.features2 = nn.AvgPool2d(7)
    self.fc = nn.Linear(WIDTH, 7)

  def forward(self, x):
    fmap = self.features(x)
    output = self.fc(self.features2(fmap).flatten(1))
    return output, torch.einsum("nchw,kc->nkhw", fmap, self.fc.weight.detach())
