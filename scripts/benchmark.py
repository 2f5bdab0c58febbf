r"""Training throughput of a config on whatever devices exist, on both input paths.

  python scripts/benchmark.py --config configs/eac.py:raf_db \
      --config.dataset.data_dir=/tmp/raf --config.batch_size=64 [--steps 50] [--write]

With the config's model, method, augmentation and global batch, measures:
  step only:  the jitted train step (augmentation on the devices included) on one batch of raw
              images already on the devices, repeated;
  device:     fed as the trainer feeds it on the device path (the decoded split in device
              memory, each batch gathered there by index; feed.py);
  host:       fed by the host pipeline (grain decodes every batch and copies it over);
  host alone: the host pipeline's own rate, with no step.
Both fed figures are also given as a fraction of the step-only rate: at 1.00 the input is never
the bottleneck. `--placements device` skips the host path. With --profile DIR, a jax.profiler
trace of 5 device-path steps. With --write, appends a row to docs/benchmarks.md.
"""

import datetime
import functools
import itertools
import pathlib
import resource
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

flags.DEFINE_integer("steps", 20, "Timed steps per measurement (after 2 warm-up steps).")
flags.DEFINE_list("placements", ["device", "host"], "Input paths to measure.")
flags.DEFINE_string("profile", "", "Write a jax.profiler trace of 5 device-path steps here.")
flags.DEFINE_bool("write", False, "Append the result to docs/benchmarks.md.")
flags.DEFINE_string("commit", "", "Commit to record (default: git HEAD of this checkout; a copy "
                    "sent to another machine may carry stale git metadata).")
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.mark_flags_as_required(["config"])

HEADER = ("| date | commit | devices | config | batch | input | img/s step only | img/s device "
          "path (x step) | img/s host path (x step) | img/s host alone | compile s | peak MiB |")


def _peak_memory_mb():
  import jax

  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host RSS peak"


def _time_steps(step_fn, state, batches, rng, steps):
  import jax

  for _ in range(2):
    state, m = step_fn(state, next(batches), rng)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step_fn(state, next(batches), rng)
  jax.block_until_ready(m)
  return state, (time.perf_counter() - start) / steps


def _host_alone(make_iter, config, steps):
  """The production rate of a fresh host iterator. It reads ahead up to `buffered` batches,
  which a short read would time instead: read `buffered + timed` untimed, then time `timed`."""
  from fer_jax.data import pipeline

  workers = pipeline.worker_count(config.input.num_workers)
  buffered = pipeline.buffered_batches(config.input.num_threads, workers)
  timed = max(steps, buffered)
  it = make_iter()
  for _ in range(buffered + timed):
    next(it)
  start = time.perf_counter()
  for _ in range(timed):
    next(it)
  return (time.perf_counter() - start) / timed


def main(argv):
  del argv
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from fer_jax import optim, schedule, train
  from fer_jax.data import device_ops, feed, pipeline, sources
  from fer_jax.models import resnet

  config, steps = flags.FLAGS.config, flags.FLAGS.steps
  dataset = sources.load(config.dataset)
  mesh = train.create_mesh()
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  method = train.get_method(config)
  model = method.build_model(config)
  steps_per_epoch = schedule.epoch_steps(config, len(dataset.train))
  tx, lr_fns = optim.make(config.optimizer, steps_per_epoch, steps_per_epoch * config.num_epochs)
  state = train.create_state(config, model, tx, method, len(dataset.train), jax.random.key(0),
                             replicated)
  step_fn = jax.jit(
    functools.partial(train.train_step, model=model, tx=tx, method=method, config=config,
                      lr_fn=lr_fns["default"], augment=device_ops.parse(config.input.train_ops)),
    donate_argnums=0, out_shardings=(replicated, replicated),
  )
  rng = jax.random.key(1)

  def inputs_for(placement):
    config.unlock()
    config.input.placement = placement
    return feed.Feed(dataset, config.input, data_sharding, progress=False)

  def make_iter(inputs):
    return iter(train.train_input(config, inputs, config.batch_size, steps_per_epoch))

  per_second, compile_s = {}, None
  for placement in flags.FLAGS.placements:
    inputs = inputs_for(placement)
    host_iter = make_iter(inputs)
    if compile_s is None:  # both paths deliver the same shapes: one program
      batch = inputs.put(next(host_iter))
      start = time.perf_counter()
      step_fn.lower(state, batch, rng).compile()
      compile_s = time.perf_counter() - start
      state, step_s = _time_steps(step_fn, state, itertools.repeat(batch), rng, steps)
      per_second["step"] = config.batch_size / step_s
    fed = pipeline.Prefetch(host_iter, inputs.put)  # as the trainer feeds its steps
    if placement == "device" and flags.FLAGS.profile:
      with jax.profiler.trace(flags.FLAGS.profile):
        state, _ = _time_steps(step_fn, state, fed, rng, 5)
    state, fed_s = _time_steps(step_fn, state, fed, rng, steps)
    fed.close()
    per_second[placement] = config.batch_size / fed_s
    if placement == "host":
      per_second["host_alone"] = config.batch_size / _host_alone(
        lambda i=inputs: make_iter(i), config, steps)

  memory, memory_kind = _peak_memory_mb()
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  commit = flags.FLAGS.commit or subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
  shape = "x".join(map(str, feed.stored_shape(dataset.train, config.input.image_size)))
  source = f"{dataset.name} {len(dataset.train)} imgs {shape}"

  def fed(name):
    if name not in per_second:
      return "-"
    return f"{per_second[name]:.0f} ({per_second[name] / per_second['step']:.2f})"

  workers = pipeline.worker_count(config.input.num_workers)
  row = (f"| {datetime.date.today()} | {commit or 'uncommitted'} | {devices} | "
         f"{config.method} {config.model.arch} w{config.model.width} {config.input.image_size}px "
         f"{resnet.compute_dtype(config.dtype)}{f', {workers} workers' if workers else ''} | "
         f"{config.batch_size} | {source} | {per_second['step']:.0f} | {fed('device')} | "
         f"{fed('host')} | {per_second.get('host_alone', 0):.0f} | {compile_s:.1f} | "
         f"{memory:.0f} ({memory_kind}) |")
  print(HEADER)
  print(row)
  if flags.FLAGS.write:
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    with open(path, "a") as f:
      f.write(row + "\n")


if __name__ == "__main__":
  app.run(main)
