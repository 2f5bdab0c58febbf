"""Which training example each position of the endless training stream reads.

The stream is one epoch after another; an epoch is an order of this process's rows, drawn
from (seed, epoch) alone, so any position's example is known without reading the ones before
it. A batch is the next `batch_size` positions: where an epoch's length is not a multiple of
the batch, the last batch of an epoch is completed from the next one. Both input paths
(fer_jax/data/feed.py) read the same positions, and a checkpoint keeps the position reached.

Samplers (`config.input.sampler`):
  shuffle      a new permutation of the rows every epoch;
  balanced     len(rows) draws with replacement, class c with probability proportional to
               1/count(c) (the AffectNet recipes: each class equally likely per draw);
  progressive  LA-Net's progressively balanced epochs (`ProgressivelyBalancedEpochs`).
"""

import math

import numpy as np

from fer_jax import cli

SAMPLERS = ("shuffle", "balanced", "progressive")


class Epochs:
  """The stream over `rows` (split positions): subclasses give `epoch_order(epoch)`, the
  positions in `rows` that epoch reads, in order."""

  def __init__(self, rows, seed):
    self.rows, self.seed = np.asarray(rows), seed
    self._cached = (None, None)
    self.epoch_length = len(self.rows)

  def epoch_order(self, epoch):
    raise NotImplementedError

  def _order(self, epoch):
    cached_epoch, order = self._cached
    if cached_epoch != epoch:
      order = self.epoch_order(epoch)
      self._cached = (epoch, order)
    return order

  def row_at(self, position):
    """The split position read at stream position `position`."""
    epoch, offset = divmod(position, self.epoch_length)
    return self.rows[self._order(epoch)[offset]]

  def rows_at(self, start, count):
    """The split positions read at stream positions start .. start + count - 1."""
    out, position = [], start
    while position < start + count:
      epoch, offset = divmod(position, self.epoch_length)
      take = min(self.epoch_length - offset, start + count - position)
      out.append(self._order(epoch)[offset:offset + take])
      position += take
    return self.rows[np.concatenate(out)]

  def __getstate__(self):  # worker processes rebuild the cache
    return {**self.__dict__, "_cached": (None, None)}


class ShuffleEpochs(Epochs):
  def epoch_order(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))


class BalancedEpochs(Epochs):
  def __init__(self, rows, labels, seed):
    super().__init__(rows, seed)
    labels = np.asarray(labels)
    weights = 1.0 / np.bincount(labels)[labels]
    self.probs = weights / weights.sum()

  def epoch_order(self, epoch):
    rng = np.random.default_rng([self.seed, epoch])
    return rng.choice(len(self.rows), len(self.rows), p=self.probs)


class ProgressivelyBalancedEpochs(Epochs):
  """LA-Net's sampler (lanet.md §4): epoch e moves the class mix from the label histogram
  towards uniform, p_c = (1 - e/E) n_c/N + (e/E)/C, over the (noisy) training labels.

  Class c gets ceil(p_c N) draws (the last class the remainder, so an epoch keeps N); a class
  with fewer examples than its draws is repeated whole and topped up without replacement,
  otherwise drawn without replacement. The epoch is shuffled, seeded by (seed, e), and its
  first `per_epoch` examples are used (the official loader drops the incomplete last batch).
  """

  def __init__(self, rows, labels, seed, *, num_epochs, num_classes, per_epoch):
    super().__init__(rows, seed)
    self.labels, self.num_epochs = np.asarray(labels), num_epochs
    self.counts = np.bincount(self.labels, minlength=num_classes)
    self.members = [np.flatnonzero(self.labels == c) for c in range(num_classes)]
    empty = [c for c, n in enumerate(self.counts) if n == 0]
    if empty:
      raise cli.UsageError(f"config.input.sampler='progressive': classes {empty} have no training "
                           "examples on this host; expected every class to have some")
    if per_epoch > len(self.labels):
      raise cli.UsageError(f"config.input.sampler='progressive': an epoch of {per_epoch} examples "
                           f"from {len(self.labels)}; set config.input.drop_last=True")
    self.epoch_length = per_epoch

  def class_counts(self, epoch):
    """Draws per class in `epoch` (the official arithmetic, in Python floats)."""
    n, classes = len(self.labels), len(self.counts)
    mix = min(epoch / self.num_epochs, 1)
    probs = [max(1 - epoch / self.num_epochs, 0) * (c / n) + mix * (1 / classes)
             for c in self.counts.tolist()]
    counts = [math.ceil(p * n) for p in probs[:-1]]
    return np.array(counts + [n - sum(counts)])

  def epoch_order(self, epoch):
    rng = np.random.default_rng([self.seed, epoch])
    chosen = []
    for members, count in zip(self.members, self.class_counts(epoch)):
      whole, rest = divmod(int(count), len(members))
      chosen += [np.tile(members, whole), rng.choice(members, rest, replace=False)]
    return rng.permutation(np.concatenate(chosen))[: self.epoch_length]


def epochs(sampler, rows, labels, seed, *, num_epochs=None, num_classes=None, per_epoch=None):
  """The `Epochs` of `sampler` (one of SAMPLERS) over `rows` with their `labels`."""
  cli.check_name(sampler, SAMPLERS, "config.input.sampler")
  if sampler == "shuffle":
    return ShuffleEpochs(rows, seed)
  if sampler == "balanced":
    return BalancedEpochs(rows, labels, seed)
  return ProgressivelyBalancedEpochs(rows, labels, seed, num_epochs=num_epochs,
                                     num_classes=num_classes, per_epoch=per_epoch)
