r"""Batches/s of the device path's host side: the sampler's rows and small fields alone, then
with the transfer and the on-device gather of the images (feed.Feed.put); no train step.

  python scripts/benchmark_feed.py [--config configs/eac.py:synthetic] [--batches 500]
"""

import pathlib
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

flags.DEFINE_integer("batches", 500, "Timed batches per measurement (after 40 untimed).")
config_flags.DEFINE_config_file("config", "configs/eac.py:synthetic", "Config file.")


def main(argv):
  del argv
  import jax  # noqa: PLC0415
  from jax.sharding import NamedSharding  # noqa: PLC0415
  from jax.sharding import PartitionSpec as P  # noqa: PLC0415

  from fer_jax import schedule, train  # noqa: PLC0415
  from fer_jax.data import feed, sources  # noqa: PLC0415

  config, n = flags.FLAGS.config, flags.FLAGS.batches
  config.unlock()
  config.input.placement = "device"
  dataset = sources.load(config.dataset)
  inputs = feed.Feed(dataset, config.input, NamedSharding(train.create_mesh(), P("data")),
                     progress=False)
  batches = train.train_input(config, inputs, config.batch_size,
                              schedule.epoch_steps(config, len(dataset.train)))
  for _ in range(40):
    jax.block_until_ready(inputs.put(next(batches)))
  start = time.perf_counter()
  for _ in range(n):
    next(batches)
  fields = n / (time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(n):
    out = inputs.put(next(batches))
  jax.block_until_ready(out)
  put = n / (time.perf_counter() - start)
  print(f"batch {config.batch_size}: rows and fields {fields:.0f} batches/s; with transfer and "
        f"gather {put:.0f} batches/s ({put * config.batch_size:.0f} images/s)")


if __name__ == "__main__":
  app.run(main)
