"""Stand-in for NCCTFER's algorithm/noisyfer_aug_new_arch.py (see ../../README.md)."""

import torch
from model.resnet import WIDTH, res18feature
from torch import nn


class noisyfer:
  def __init__(self, args, train_dataset, device, input_channel, num_classes):
    del train_dataset, input_channel
    self.model = res18feature(args).cuda()  # as theirs: benchmark_torch makes it a no-op on CPU
    self.model.to(device)
    self.positive_classifier = nn.Linear(WIDTH, num_classes).to(device)
    self.negative_classifier = nn.Linear(WIDTH, num_classes).to(device)
    self.warmup_epochs = args.warmup_epochs
    self.k = args.k
    self.ce_loss = nn.CrossEntropyLoss()
    params = [*self.model.parameters(), *self.positive_classifier.parameters(),
              *self.negative_classifier.parameters()]
    self.optimizer = torch.optim.Adam(params, lr=args.lr)

  def weighted_CCE(self, logits, labels):
    """(CE summed over the confident samples, indices of the others, the confident mask)."""
    probs = logits.softmax(1)
    thresholds = probs.clamp(0.35, 0.65).mean(0)
    own = probs.gather(1, labels[:, None])[:, 0].clamp(0.35, 0.65)
    sure = own >= thresholds[labels]
    loss = nn.functional.cross_entropy(logits, labels, reduction="none")[sure].sum()
    return loss, (~sure).nonzero()[:, 0], sure

  def consistency_loss(self, weak, strong):
    p = weak.softmax(1)
    mask = torch.zeros_like(p).scatter(1, p.topk(self.k, largest=False).indices, 1.0)
    return -(mask * p * strong.detach().log_softmax(1)).sum(1).mean()
