"""grain input pipelines (host) and the on-device half of preprocessing.

Train: source -> this process's shard -> seeded shuffle, reshuffled every epoch -> random_map
(the config's host ops) -> batch -> threads (and optionally worker processes) -> `Prefetch`
onto the devices. The iterator's state is a small JSON dict that checkpoints save, so a
resumed run sees exactly the batches it would have seen.

Eval: the split in order, padded to whole batches, with `_mask` marking real examples, so each
test image counts exactly once.
"""

import math
import os
import queue
import threading

import grain
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cli
from fer_jax.data import augment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _HostOps(grain.transforms.RandomMap):
  """Picklable wrapper so worker processes can rebuild the ops from their string."""

  def __init__(self, spec):
    self.spec = spec
    self._fn = augment.parse(spec)

  def __getstate__(self):
    return {"spec": self.spec}

  def __setstate__(self, state):
    self.__init__(state["spec"])

  def random_map(self, element, rng):
    return self._fn(element, rng)


class BalancedEpochs:
  """An endless source: epoch e is len(rows) draws with replacement from `source[rows]`,
  class c drawn with probability proportional to 1/count(c), seeded by (seed, e).

  The class-balanced sampler of the AffectNet recipes (each class equally likely per draw).
  """

  def __init__(self, source, rows, labels, seed):
    self.source, self.rows, self.seed = source, np.asarray(rows), seed
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    self.probs = weights / weights.sum()
    self._epoch = (None, None)

  def __len__(self):
    return len(self.rows) * 10**6  # endless for any real run

  def __getitem__(self, index):
    epoch, position = divmod(index, len(self.rows))
    cached_epoch, draws = self._epoch
    if cached_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      draws = rng.choice(len(self.rows), len(self.rows), p=self.probs)
      self._epoch = (epoch, draws)
    return self.source[int(self.rows[draws[position]])]

  def __getstate__(self):
    return {**self.__dict__, "_epoch": (None, None)}


class ProgressivelyBalancedEpochs:
  """LA-Net's sampler (lanet.md §4): epoch e moves the class mix from the label histogram
  towards uniform, p_c = (1 - e/E) n_c/N + (e/E)/C, over the (noisy) training labels.

  Class c gets ceil(p_c N) draws (the last class the remainder, so an epoch keeps N); a class
  with fewer examples than its draws is repeated whole and topped up without replacement,
  otherwise drawn without replacement. The epoch is shuffled, seeded by (seed, e), and its
  first `per_epoch` examples are used (the official loader drops the incomplete last batch).
  """

  def __init__(self, source, rows, labels, seed, *, num_epochs, num_classes, per_epoch):
    self.source, self.rows, self.seed = source, np.asarray(rows), seed
    self.labels, self.num_epochs, self.per_epoch = np.asarray(labels), num_epochs, per_epoch
    self.counts = np.bincount(self.labels, minlength=num_classes)
    self.members = [np.flatnonzero(self.labels == c) for c in range(num_classes)]
    empty = [c for c, n in enumerate(self.counts) if n == 0]
    if empty:
      raise cli.UsageError(f"config.input.sampler='progressive': classes {empty} have no training "
                           "examples on this host; expected every class to have some")
    if per_epoch > len(self.labels):
      raise cli.UsageError(f"config.input.sampler='progressive': an epoch of {per_epoch} examples "
                           f"from {len(self.labels)}; set config.input.drop_last=True")
    self._epoch = (None, None)

  def class_counts(self, epoch):
    """Draws per class in `epoch` (the official arithmetic, in Python floats)."""
    n, classes = len(self.labels), len(self.counts)
    mix = min(epoch / self.num_epochs, 1)
    probs = [max(1 - epoch / self.num_epochs, 0) * (c / n) + mix * (1 / classes)
             for c in self.counts.tolist()]
    counts = [math.ceil(p * n) for p in probs[:-1]]
    return np.array(counts + [n - sum(counts)])

  def epoch_order(self, epoch):
    """Positions in `rows` drawn for `epoch`, shuffled."""
    rng = np.random.default_rng([self.seed, epoch])
    chosen = []
    for members, count in zip(self.members, self.class_counts(epoch)):
      whole, rest = divmod(int(count), len(members))
      chosen += [np.tile(members, whole), rng.choice(members, rest, replace=False)]
    return rng.permutation(np.concatenate(chosen))[: self.per_epoch]

  def __len__(self):
    return self.per_epoch * 10**6  # endless for any real run

  def __getitem__(self, index):
    epoch, position = divmod(index, self.per_epoch)
    cached_epoch, order = self._epoch
    if cached_epoch != epoch:
      order = self.epoch_order(epoch)
      self._epoch = (epoch, order)
    return self.source[int(self.rows[order[position]])]

  def __getstate__(self):
    return {**self.__dict__, "_epoch": (None, None)}


def worker_count(num_workers):
  """`num_workers`, or for -1 the default: none on a CPU backend, where the step needs the
  cores and in-process threads are faster (docs/design.md), else half the host's cores.
  On a 16-core H100 host, 8 workers feed the 224 px CE step at 4,909 img/s where in-process
  threads give 1,231 (docs/benchmarks.md)."""
  if num_workers >= 0:
    return num_workers
  return 0 if jax.default_backend() == "cpu" else max(1, (os.cpu_count() or 2) // 2)


def buffered_batches(num_threads, num_workers=0):
  """How many batches `train_dataset` reads ahead: 2 per reader thread, in each worker."""
  return max(worker_count(num_workers), 1) * 2 * max(num_threads, 1)


def train_dataset(source, ops, *, batch_size, seed, num_threads=8, num_workers=-1,
                  sampler="shuffle", num_epochs=None, num_classes=None, steps_per_epoch=None):
  """The infinite, resumable train stream of this process's local batches.

  Args:
    source: a random-access source of records (with `labels` for the balanced sampler).
    ops: host pipeline string (see `augment`).
    batch_size: the per-process batch size.
    seed: shuffle and augmentation seed.
    num_threads: reader threads in this process (PIL releases the GIL).
    num_workers: extra worker processes; 0 keeps everything in-process; -1 picks the
      default of `worker_count`.
    sampler: "shuffle" (a new permutation every epoch), "balanced" (`BalancedEpochs`) or
      "progressive" (`ProgressivelyBalancedEpochs`, which needs num_epochs, num_classes and
      steps_per_epoch).

  Returns:
    A grain IterDataset; `iter()` it and use get_state/set_state to checkpoint it.
  """
  rows = np.arange(jax.process_index(), len(source), jax.process_count())  # this host's part
  if sampler == "shuffle":
    ds = grain.MapDataset.source(source)[jax.process_index() :: jax.process_count()]
    ds = ds.seed(seed).shuffle().repeat()  # repeat after shuffle: a new order every epoch
  elif sampler == "balanced":
    ds = grain.MapDataset.source(BalancedEpochs(source, rows, source.labels[rows], seed))
    ds = ds.seed(seed)
  elif sampler == "progressive":
    ds = grain.MapDataset.source(ProgressivelyBalancedEpochs(
      source, rows, source.labels[rows], seed, num_epochs=num_epochs, num_classes=num_classes,
      per_epoch=steps_per_epoch * batch_size))
    ds = ds.seed(seed)
  else:
    raise cli.UsageError(f"config.input.sampler={sampler!r}: expected 'shuffle', 'balanced' or "
                         "'progressive'")
  ds = ds.random_map(_HostOps(ops))
  ds = ds.batch(batch_size, drop_remainder=True)
  # Elements here are whole batches: keep a couple per reader thread, not 2 * batch_size of
  # them (at 224 px and batch 128 that would hold gigabytes of images).
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=buffered_batches(num_threads)))
  num_workers = worker_count(num_workers)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def eval_batches(source, ops, global_batch_size):
  """Yields this process's part of each padded global eval batch, with a `_mask` field."""
  apply = augment.parse(ops)
  ds = grain.MapDataset.source(source).map(lambda ex: apply(ex, None))
  n, local = len(ds), global_batch_size // jax.process_count()
  lo = jax.process_index() * local
  for start in range(0, n, global_batch_size):
    rows = [min(i, n - 1) for i in range(start + lo, start + lo + local)]
    examples = [ds[i] for i in rows]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    batch["_mask"] = np.array([start + lo + j < n for j in range(local)])
    yield batch


def to_device(batch, sharding):
  """Assembles the global batch from every process's local rows, sharded over the mesh."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


class Prefetch:
  """Puts the next `size` batches of a host iterator on the devices from a background thread,
  while the current step runs: without it a GPU step waits for the host to hand over and copy
  each batch (H100, EAC at 224 px: 2,724 img/s fed against 3,830 for the step alone).
  `put(host_batch) -> device batch` does the copy (feed.Feed.put, or `to_device`).

  `get_state()` is the host iterator's state as of the last batch handed out, not of the last
  one prefetched, so a checkpoint resumes exactly after the batches the steps consumed. Set a
  restored state on the host iterator before wrapping it.
  """

  def __init__(self, iterator, put, size=2):
    self._iterator, self._put_on_device = iterator, put
    self._state = iterator.get_state()
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self):
    try:
      while not self._stop.is_set():
        batch = self._put_on_device(next(self._iterator))
        self._put((batch, self._iterator.get_state()))
    except Exception as e:  # noqa: BLE001 (re-raised in the consumer's thread)
      self._put(e)

  def _put(self, item):
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    batch, self._state = item
    return batch

  def get_state(self):
    return self._state

  def close(self):
    """Stops the thread (it would otherwise hold its batches until the process exits)."""
    self._stop.set()
    self._thread.join()


def to_model_input(batch, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype=jnp.float32):
  """On device: uint8 images -> normalised floats; erase boxes -> 0 (after Normalize).

  Every key `image*` is converted; its `<key>_erase` box, if present, is zeroed.
  """
  out = dict(batch)
  for key, images in batch.items():
    if not key.startswith("image") or key.endswith("_erase"):
      continue
    x = (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean)) / jnp.asarray(std)
    if f"{key}_erase" in batch:
      top, left, h, w = (batch[f"{key}_erase"][:, i, None, None] for i in range(4))
      rows = jnp.arange(x.shape[1])[None, :, None]
      cols = jnp.arange(x.shape[2])[None, None, :]
      inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
      x = jnp.where(inside[..., None], 0.0, x)
    out[key] = x.astype(dtype)
  return out
