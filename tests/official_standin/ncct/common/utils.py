"""Stand-in for NCCTFER's common/utils.py (see ../../README.md)."""


def accuracy(output, target, topk=(1,)):
  return (output.topk(max(topk), 1).indices[:, 0] == target).float().mean() * 100
