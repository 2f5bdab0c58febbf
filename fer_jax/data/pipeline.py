"""grain input pipelines (host) and the on-device half of preprocessing.

Train: the sampler's stream of this process's rows (fer_jax/data/sampler.py) -> random_map
(the host ops: at most a resize to the stored shape) -> batch -> threads (and optionally worker
processes) -> `Prefetch` onto the devices. The iterator's state is a small JSON dict that
checkpoints save, so a resumed run sees exactly the batches it would have seen.

Eval: the split in order, padded to whole batches, with `_mask` marking real examples, so each
test image counts exactly once.
"""

import os
import queue
import threading

import grain
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cli
from fer_jax.data import augment, sampler
from fer_jax.models.weights import IMAGENET_MEAN, IMAGENET_STD


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


class _Stream:
  """The endless training stream as a grain source: position i is the record the sampler puts
  there (sampler.Epochs), so grain's position is the sampler's."""

  def __init__(self, source, epochs):
    self.source, self.epochs = source, epochs

  def __len__(self):
    return self.epochs.epoch_length * 10**6  # endless for any real run

  def __getitem__(self, position):
    return self.source[int(self.epochs.row_at(position))]


def train_epochs(source, sampler_name, seed, *, batch_size, num_epochs=None, num_classes=None,
                 steps_per_epoch=None):
  """The `sampler.Epochs` of this process's rows of `source` (rows p, p + P, ... of P)."""
  rows = np.arange(jax.process_index(), len(source), jax.process_count())
  per_epoch = None if steps_per_epoch is None else steps_per_epoch * batch_size
  return sampler.epochs(sampler_name, rows, source.labels[rows], seed, num_epochs=num_epochs,
                        num_classes=num_classes, per_epoch=per_epoch)


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
  """The infinite, resumable train stream of this process's local batches, read by grain.

  Args:
    source: a random-access source of records with `labels`.
    ops: host pipeline string (see `augment`).
    batch_size: the per-process batch size.
    seed: the sampler's seed.
    num_threads: reader threads in this process (PIL releases the GIL).
    num_workers: extra worker processes; 0 keeps everything in-process; -1 picks the
      default of `worker_count`.
    sampler: one of sampler.SAMPLERS; "progressive" needs num_epochs, num_classes and
      steps_per_epoch.

  Returns:
    A grain IterDataset; `iter()` it and use get_state/set_state to checkpoint it.
  """
  epochs = train_epochs(source, sampler, seed, batch_size=batch_size, num_epochs=num_epochs,
                        num_classes=num_classes, steps_per_epoch=steps_per_epoch)
  ds = grain.MapDataset.source(_Stream(source, epochs)).seed(seed)
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


def eval_rows(num_examples, global_batch_size):
  """Yields (rows, mask): this process's part of each global eval batch, padded with the last
  example where the split ends; `mask` marks the real ones, so each example counts once."""
  local = global_batch_size // jax.process_count()
  lo = jax.process_index() * local
  for start in range(0, num_examples, global_batch_size):
    positions = np.arange(start + lo, start + lo + local)
    yield np.minimum(positions, num_examples - 1), positions < num_examples


def eval_batches(source, ops, global_batch_size):
  """Yields this process's part of each padded global eval batch, with a `_mask` field."""
  apply = augment.parse(ops)
  for rows, mask in eval_rows(len(source), global_batch_size):
    examples = [apply(source[int(i)], None) for i in rows]
    batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
    batch["_mask"] = mask
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


def statistics(input_config):
  """(mean, std) of RGB on [0, 1] that a run normalises with: config.input.mean and std, or
  ImageNet's where they are empty (every method but NLA's official recipe)."""
  mean, std = tuple(input_config.get("mean") or IMAGENET_MEAN), tuple(
    input_config.get("std") or IMAGENET_STD)
  if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
    raise cli.UsageError(f"config.input.mean={mean} and config.input.std={std}: expected three "
                         "values each (RGB, on [0, 1]), the std positive")
  return mean, std


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
