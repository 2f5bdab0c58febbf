r"""Train-step throughput, compile time and peak memory for a config, on whatever devices exist.

  python scripts/benchmark.py --config configs/baseline.py:synthetic [--steps 20] [--write]

Measures two things with the config's model, method and global batch:
  synthetic: in-memory uint8 batches, already on device (the step alone);
  pipeline:  the config's real grain input pipeline feeding the step.
With --write, appends a row to docs/benchmarks.md (date, device, commit).
"""

import datetime
import functools
import pathlib
import resource
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

flags.DEFINE_integer("steps", 20, "Timed steps per measurement (after 2 warm-up steps).")
flags.DEFINE_bool("write", False, "Append the result to docs/benchmarks.md.")
flags.DEFINE_string("commit", "", "Commit to record (default: git HEAD of this checkout; a copy "
                    "sent to another machine may carry stale git metadata).")
config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.mark_flags_as_required(["config"])


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


def main(argv):
  del argv
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from fer_jax import optim, train
  from fer_jax.data import pipeline, sources

  config = flags.FLAGS.config
  dataset = sources.load(config.dataset)
  mesh = train.create_mesh()
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  method = train.get_method(config)
  model = method.build_model(config)
  steps_per_epoch = optim.epoch_steps(config, len(dataset.train))
  tx, lr_fns = optim.make(config.optimizer, steps_per_epoch, steps_per_epoch * config.num_epochs)
  state = train.create_state(config, model, tx, method, len(dataset.train), jax.random.key(0),
                             replicated)
  step_fn = jax.jit(
    functools.partial(train.train_step, model=model, tx=tx, method=method, config=config,
                      lr_fn=lr_fns["default"]),
    donate_argnums=0, out_shardings=(replicated, replicated),
  )
  def make_pipeline():
    return train.train_input(config, dataset.train, config.batch_size, steps_per_epoch)

  host_iter = iter(make_pipeline())
  sample = next(host_iter)
  start = time.perf_counter()
  device_batch = pipeline.to_device(sample, data_sharding)
  compiled = step_fn.lower(state, device_batch, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  del compiled

  def repeat(batch):
    while True:
      yield batch


  state, synthetic_s = _time_steps(step_fn, state, repeat(device_batch), jax.random.key(1),
                                   flags.FLAGS.steps)
  # The production rate of a fresh iterator. It reads ahead up to `buffered` batches, which a
  # short read would time instead: read `buffered + timed` untimed (the buffer, and whatever
  # refilled while it drained), then time `timed` more.
  workers = pipeline.worker_count(config.input.num_workers)
  buffered = pipeline.buffered_batches(config.input.num_threads, workers)
  timed = max(flags.FLAGS.steps, buffered)
  host_only = iter(make_pipeline())
  for _ in range(buffered + timed):
    next(host_only)
  start = time.perf_counter()
  for _ in range(timed):
    next(host_only)
  host_s = (time.perf_counter() - start) / timed
  fed = pipeline.Prefetch(host_iter, data_sharding)  # as the trainer feeds its steps
  state, pipeline_s = _time_steps(step_fn, state, fed, jax.random.key(1), flags.FLAGS.steps)
  fed.close()
  memory, memory_kind = _peak_memory_mb()
  b = config.batch_size
  devices = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  commit = flags.FLAGS.commit or subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
  row = (f"| {datetime.date.today()} | {commit or 'uncommitted'} | {devices} | "
         f"{config.method} {config.model.arch} w{config.model.width} {config.input.image_size}px "
         f"{config.dtype}{f', {workers} workers' if workers else ''} | {b} | "
         f"{b / synthetic_s:.1f} | {b / pipeline_s:.1f} | {b / host_s:.0f} | {compile_s:.1f} | "
         f"{memory:.0f} ({memory_kind}) |")
  print("| date | commit | devices | config | batch | img/s step only | img/s with pipeline | "
        "img/s host pipeline alone | compile s | peak MiB |")
  print(row)
  if flags.FLAGS.write:
    path = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    with open(path, "a") as f:
      f.write(row + "\n")


if __name__ == "__main__":
  app.run(main)
