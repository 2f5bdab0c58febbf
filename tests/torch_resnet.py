"""A torchvision-layout ResNet in plain PyTorch: the reference for converter parity tests.

Same module names as torchvision.models.resnet, so its state_dict has torchvision's keys.
(PyPI torchvision does not import beside the CPU torch used in CI, hence this file.)
"""

import torch
from torch import nn


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = _downsample(cin, width, stride, 1)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
  expansion = 4
  stride_on_1x1 = False  # True: Caffe style (EAC's VGGFace2 ResNet-50)

  def __init__(self, cin, width, stride):
    super().__init__()
    first, second = (stride, 1) if self.stride_on_1x1 else (1, stride)
    self.conv1 = nn.Conv2d(cin, width, 1, first, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, second, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(width * 4)
    self.downsample = _downsample(cin, width, stride, 4)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = torch.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class CaffeBottleneck(Bottleneck):
  stride_on_1x1 = True


def _downsample(cin, width, stride, expansion):
  if stride == 1 and cin == width * expansion:
    return None
  return nn.Sequential(nn.Conv2d(cin, width * expansion, 1, stride, bias=False),
                       nn.BatchNorm2d(width * expansion))


class ResNet(nn.Module):
  def __init__(self, block, layers, num_classes, width=64, ceil_pool=False):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True) if ceil_pool else nn.MaxPool2d(3, 2, 1)
    cin = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block(cin, width * 2**i, 2 if i and not j else 1))
        cin = width * 2**i * block.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for i in range(4):
      x = getattr(self, f"layer{i + 1}")(x)
    return self.fc(x.mean((2, 3)))


def make(arch, num_classes, width=64, seed=0):
  """A randomly initialised eval-mode model with non-trivial BN running statistics."""
  torch.manual_seed(seed)
  block, layers = {"resnet18": (BasicBlock, (2, 2, 2, 2)),
                   "resnet50": (Bottleneck, (3, 4, 6, 3)),
                   "resnet50_caffe": (CaffeBottleneck, (3, 4, 6, 3))}[arch]
  model = ResNet(block, layers, num_classes, width, ceil_pool=arch == "resnet50_caffe")
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return model.eval()
