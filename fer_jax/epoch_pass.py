"""The end-of-epoch pass over the training set that a method may define (ReSup's refit of its
weight tables from every training sample's predictions).

A method that defines both
  epoch_outputs(state, batch, *, model, config) -> {name: (B, ...) array}
      per-sample outputs of a batch of the training split, augmented with the training ops
      (e.g. eval-mode predictions), jitted;
  after_epoch(extra, outputs, config) -> {key: array}
      on the host: `extra` is a copy of state.extra, `outputs` every training sample's outputs
      in index order; returns the state.extra entries to replace;
(and, where it defines runs_epoch_pass(config), that returns True: CE's optional recording)
gets, after each epoch's last step and before that epoch's checkpoint, a pass over every
training example once (both input paths, any number of devices and processes), so the
checkpoint carries its result and a resumed run continues exactly. Its augmentation draws from
the run's key and the epoch, a stream the training steps never use.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.data import augment, feed, pipeline
from fer_jax.models import resnet


def train_split_batches(inputs, global_batch_size):
  """Every training example of `inputs` (a feed.Feed) once, as this process's part of padded
  global batches with `_mask` (real examples), on the devices. Each process reads its own rows
  (p, p + P, ... of P), as its train pipeline does; every process yields the same number."""
  train, count, me = inputs.dataset.train, jax.process_count(), jax.process_index()
  local = global_batch_size // count
  rows = np.arange(me, len(train), count)
  num_batches = -(-len(range(0, len(train), count)) // local)  # of process 0, the most rows
  fit = None if inputs.placement == "device" else augment.parse(inputs.host_ops)
  for b in range(num_batches):
    positions = np.arange(b * local, (b + 1) * local)
    mask = positions < len(rows)
    chunk = rows[np.minimum(positions, len(rows) - 1)]
    if fit is None:
      batch = feed.fields_of(train, chunk, inputs.train_fields, count)
    else:
      records = [fit(train[int(i)], None) for i in chunk]
      batch = {k: np.stack([r[k] for r in records]) for k in records[0]}
    yield inputs.put({**batch, "_mask": mask})


def _host(x):
  """A replicated array's value, on any process."""
  return np.asarray(x.addressable_data(0))


def make(method, model, config, inputs, augment_ops):
  """`run(state, rng) -> state` doing the method's end-of-epoch pass, or None when the method
  defines none. `augment_ops`: the device_ops pipeline of the training augmentation."""
  if not hasattr(method, "after_epoch") or not getattr(method, "runs_epoch_pass",
                                                         lambda _: True)(config):
    return None
  dtype = jnp.dtype(resnet.compute_dtype(config.dtype))
  statistics = pipeline.statistics(config.input)

  def outputs_of(state, batch, rng, stream, number):
    if augment_ops is not None:
      batch = augment_ops(batch, jax.random.fold_in(jax.random.fold_in(rng, stream), number))
    batch = pipeline.to_model_input(batch, *statistics, dtype=dtype)
    out = method.epoch_outputs(state, batch, model=model, config=config)
    return {**out, "index": batch["index"], "_mask": batch["_mask"]}

  replicated = jax.sharding.NamedSharding(inputs.sharding.mesh, jax.sharding.PartitionSpec())
  outputs_fn = jax.jit(outputs_of, out_shardings=replicated)

  def run(state, rng):
    epoch = int(_host(state.step)) // int(_host(state.extra["steps_per_epoch"]))
    stream = np.uint32(2**31 + epoch)  # the train steps fold in their step, always smaller
    parts = [jax.tree.map(_host, outputs_fn(state, batch, rng, stream, np.uint32(b)))
             for b, batch in enumerate(train_split_batches(inputs, config.eval_batch_size))]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    mask = joined.pop("_mask")
    order = np.argsort(joined.pop("index")[mask], kind="stable")
    outputs = {k: v[mask][order] for k, v in joined.items()}
    updates = method.after_epoch(jax.tree.map(_host, state.extra), outputs, config)
    placed = {k: jax.make_array_from_callback(
      np.shape(v), state.extra[k].sharding,
      functools.partial(lambda idx, value: value[idx], value=np.asarray(v, state.extra[k].dtype)))
      for k, v in updates.items()}
    return state.replace(extra={**state.extra, **placed})

  return run
