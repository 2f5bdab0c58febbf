"""How batches reach the train and eval steps: decoded once into device memory, or streamed.

Every random augmentation runs inside the jitted step (`device_ops`), so the two paths differ
only in where a batch's raw uint8 images come from:

- "device": each split is decoded once at start-up into a uint8 array held by every local
  device. Each step's host batch is then only the sampler's rows with their small fields
  (label, index, landmarks, ...), read from memory with numpy, and the images of the batch are
  gathered by index on the devices.
- "host": the grain pipeline decodes every image of every batch, as a dataset too large for
  device memory needs (AffectNet), and copies the batch to the devices.

Both paths read the same sampler stream (fer_jax/data/sampler.py): the same rows in the same
batches, so a run gives the same training on either path; the position reached is what a
checkpoint saves.

Images are batched at one stored shape: the shape of the split's images when a probe of them
agrees, else config.input.image_size (PIL bilinear), e.g. AffectNet's crops of every size.
With several processes, each decodes and holds only the rows its own pipeline reads.
"""

import concurrent.futures
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fer_jax import cli
from fer_jax.data import augment, pipeline

PLACEMENTS = ("auto", "device", "host")


def stored_shape(source, size, probe=64):
  """(H, W) of every batch of `source`: its images' shape when `probe` of them, evenly spaced,
  agree; otherwise (size, size)."""
  positions = np.unique(np.linspace(0, len(source) - 1, min(probe, len(source))).astype(int))
  shapes = {tuple(source.store[_store_row(source, int(i))]["image"].shape[:2]) for i in positions}
  return shapes.pop() if len(shapes) == 1 else (size, size)


def _store_row(source, index):
  return index if source.rows is None else int(source.rows[index])


def decode(source, shape, rows, *, threads=8, progress=True, desc="decoding"):
  """Decodes `source[rows]` into (images (len(rows), H, W, 3) uint8, {field: array}).

  Images of another shape are resized to `shape` (PIL bilinear), as the host path does.
  """
  fit = augment.fit(*shape)
  first = source.store[_store_row(source, int(rows[0]))] if len(rows) else {}
  images = np.empty((len(rows), *shape, 3), np.uint8)
  fields = {k: np.empty((len(rows), *np.shape(v)), np.asarray(v).dtype)
            for k, v in first.items() if k != "image"}

  def fill(chunk):
    for j in chunk:
      record = fit(source.store[_store_row(source, int(rows[j]))], None)
      images[j] = record["image"]
      for k in fields:
        fields[k][j] = record[k]
    return len(chunk)

  chunks = np.array_split(np.arange(len(rows)), max(1, len(rows) // 256))
  with (tqdm.tqdm(total=len(rows), desc=desc, unit="img", disable=not progress) as bar,
        concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool):
    for done in pool.map(fill, chunks):
      bar.update(done)
  return images, fields


_take = jax.jit(lambda images, index: jnp.take(images, index, axis=0))


class DeviceImages:
  """A split's decoded images on every local device; `gather` builds a global batch."""

  def __init__(self, images, sharding, stride=1):
    self.sharding, self.stride = sharding, stride
    self.copies = {d: jax.device_put(images, d) for d in sharding.addressable_devices}
    self.nbytes = images.nbytes

  def gather(self, index):
    """The images of this process's batch rows `index` (split positions), as a global array
    sharded like the batch (this process's rows on its devices)."""
    local = np.asarray(index) // self.stride
    shape = (len(local) * jax.process_count(), *next(iter(self.copies.values())).shape[1:])
    rows = {d: range(*s[0].indices(shape[0]))
            for d, s in self.sharding.addressable_devices_indices_map(shape).items()}
    first = min(r.start for r in rows.values())  # this process's rows are contiguous
    shards = [_take(self.copies[d], jax.device_put(local[r.start - first:r.stop - first], d))
              for d, r in rows.items()]
    return jax.make_array_from_single_device_arrays(shape, self.sharding, shards)


def memory_budget(fraction):
  """`fraction` of one device's memory (of the host's RAM on a backend that reports none)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  total = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return int(fraction * total)


def free_memory():
  """(bytes free, bytes in all) of the first local device's allocator, or None on a backend
  that reports no memory statistics (the CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" not in stats:
    return None
  return stats["bytes_limit"] - stats.get("bytes_in_use", 0), stats["bytes_limit"]


def _check_free_memory(per_device, input_config):
  """Refuses, before anything is allocated, a device path whose decoded splits exceed the
  device's free memory (XLA would fail part-way with a raw out-of-memory error)."""
  memory = free_memory()
  if memory is None or per_device <= memory[0]:
    return
  free, total = memory
  raise cli.UsageError(
    f"config.input.placement={input_config.placement!r} takes the device path, and its "
    f"{per_device / 1e9:.2f} GB of decoded images per device do not fit in the "
    f"{free / 1e9:.2f} GB free on {jax.local_devices()[0].device_kind}: set "
    "config.input.placement=host, or placement=auto with config.input.device_budget (now "
    f"{input_config.device_budget}) below {per_device / total:.3f}")


def fields_of(source, rows, fields, stride=1):
  """The batch of split positions `rows` without its images: the fields, names and dtypes of
  `source`'s records (LabelledSource), read from memory; `fields` hold this process's rows
  (positions p, p + stride, ...)."""
  batch = {"index": rows.astype(np.int32), "label": source.labels[rows].astype(np.int32)}
  if source.clean_labels is not None:
    batch["clean_label"] = source.clean_labels[rows].astype(np.int32)
  if source.soft_labels is not None:
    batch["soft_label"] = source.soft_labels[rows].astype(np.float32)
  batch.update({k: v[rows // stride] for k, v in fields.items()})
  return batch


class IndexBatches:
  """The device path's train batches: the sampler's next rows with their small per-example
  fields, read from memory with numpy (the images are gathered on the devices by `index`).
  The same batches, fields and dtypes as the host path's grain pipeline gives."""

  def __init__(self, source, epochs, batch_size, fields, stride):
    self.source, self.epochs, self.batch_size = source, epochs, batch_size
    self.fields, self.stride = fields, stride
    self.next_index = 0

  def __iter__(self):
    return self

  def __next__(self):
    rows = self.epochs.rows_at(self.next_index * self.batch_size, self.batch_size)
    self.next_index += 1
    return fields_of(self.source, rows, self.fields, self.stride)

  def get_state(self):
    return {"next_index": self.next_index}  # as grain counts batches

  def set_state(self, state):
    self.next_index = state["next_index"]


class _Tagged:
  """An iterator whose checkpointed state names its input path: a resume on the other path
  (grain's worker states differ from a position) is refused with the way out."""

  def __init__(self, iterator, placement):
    self.iterator, self.placement = iterator, placement

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.iterator)

  def get_state(self):
    return {"placement": self.placement, "state": self.iterator.get_state()}

  def set_state(self, state):
    if state.get("placement") != self.placement:
      raise cli.UsageError(
        f"the checkpoint was written on the {state.get('placement')!r} input path and this run "
        f"takes the {self.placement!r} one; set config.input.placement="
        f"{state.get('placement')!r} to resume it")
    self.iterator.set_state(state["state"])


class Feed:
  """The train and eval inputs of a run on one of the two paths (see the module docstring).

  Attributes:
    placement: "device" or "host".
    reason: why, for the log.
    host_ops: the host op string of the host path (the resize to the stored shape, if any).
  """

  def __init__(self, dataset, input_config, sharding, *, progress=True):
    self.sharding = sharding
    size = input_config.image_size
    self.shapes = {split: stored_shape(getattr(dataset, split), size)
                   for split in ("train", "test")}
    # Worst case: every image at its stored shape, one copy per device.
    per_device = sum(len(getattr(dataset, s)) * h * w * 3 / (jax.process_count()
                     if s == "train" else 1) for s, (h, w) in self.shapes.items())
    choice = input_config.placement
    cli.check_name(choice, PLACEMENTS, "config.input.placement")
    budget = memory_budget(input_config.device_budget)
    fits = per_device <= budget
    gb = f"{per_device / 1e9:.2f} GB of decoded images per device"
    if choice == "auto":
      self.placement = "device" if fits else "host"
      self.reason = (f"{gb}, {'within' if fits else 'over'} the budget of {budget / 1e9:.2f} GB "
                     f"(config.input.device_budget={input_config.device_budget} of the memory)")
    else:
      self.placement = choice
      self.reason = f"config.input.placement={choice!r} ({gb})"
    self.dataset = dataset
    if self.placement == "host":
      self.host_ops = augment.fit_spec(self.shapes["train"])
      return
    _check_free_memory(per_device, input_config)
    self.host_ops = ""
    stride, me = jax.process_count(), jax.process_index()
    threads = input_config.num_threads
    train = dataset.train
    images, self.train_fields = decode(train, self.shapes["train"],
                                       np.arange(me, len(train), stride), threads=threads,
                                       progress=progress, desc="train split -> devices")
    self.train_images = DeviceImages(images, sharding, stride)
    test = dataset.test
    images, self.test_fields = decode(test, self.shapes["test"], np.arange(len(test)),
                                      threads=threads, progress=progress,
                                      desc="test split -> devices")
    self.test_images = DeviceImages(images, sharding)

  def train_batches(self, config, batch_size, steps_per_epoch):
    """This process's endless train batches (of `batch_size`), on this feed's path, as a
    resumable iterator (get_state / set_state) of host batches for `put`."""
    kwargs = dict(batch_size=batch_size, num_epochs=config.num_epochs,
                  num_classes=config.model.num_classes, steps_per_epoch=steps_per_epoch)
    if self.placement == "host":
      return _Tagged(iter(pipeline.train_dataset(
        self.dataset.train, self.host_ops, seed=config.seed, sampler=config.input.sampler,
        num_threads=config.input.num_threads, num_workers=config.input.num_workers,
        **kwargs)), "host")
    epochs = pipeline.train_epochs(self.dataset.train, config.input.sampler, config.seed,
                                   **kwargs)
    return _Tagged(IndexBatches(self.dataset.train, epochs, batch_size, self.train_fields,
                                jax.process_count()), "device")

  def first_rows_batch(self, batch_size):
    """A host batch of this process's first `batch_size` training rows, read directly (no
    sampler, no worker processes): the shapes and fields of a train batch, for tracing."""
    rows = np.arange(jax.process_index(), len(self.dataset.train), jax.process_count())
    rows = np.resize(rows, batch_size)
    if self.placement == "device":
      return fields_of(self.dataset.train, rows, self.train_fields, jax.process_count())
    apply = augment.parse(self.host_ops)
    records = [apply(self.dataset.train[int(i)], None) for i in rows]
    return {k: np.stack([r[k] for r in records]) for k in records[0]}

  def put(self, batch):
    """A host batch of the train pipeline -> the global batch on the devices, with images."""
    if self.placement == "host":
      return pipeline.to_device(batch, self.sharding)
    out = pipeline.to_device(batch, self.sharding)
    out["image"] = self.train_images.gather(batch["index"])
    return out

  def eval_batches(self, global_batch_size):
    """The test split's padded global batches on the devices (see pipeline.eval_batches)."""
    if self.placement == "host":
      for batch in pipeline.eval_batches(self.dataset.test, augment.fit_spec(self.shapes["test"]),
                                         global_batch_size):
        yield pipeline.to_device(batch, self.sharding)
      return
    for rows, mask in pipeline.eval_rows(len(self.dataset.test), global_batch_size):
      batch = {**fields_of(self.dataset.test, rows, self.test_fields), "_mask": mask}
      out = pipeline.to_device(batch, self.sharding)
      out["image"] = self.test_images.gather(batch["index"])
      yield out


def describe(feed):
  """One log line: which input path runs and why."""
  if feed.placement == "device":
    return (f"Input: decoded splits on the devices, batches gathered there by index "
            f"({feed.reason})")
  return f"Input: host pipeline, every batch decoded by grain and copied ({feed.reason})"

