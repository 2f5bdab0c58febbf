"""The device path refuses, before allocating, decoded splits over the device's free memory."""

import jax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fer_jax import cli, train
from fer_jax.data import feed, sources
from tests.test_train import tiny_config


def _decode(*args, **kwargs):
  raise AssertionError("decoded")


def test_device_path_over_free_memory_is_a_usage_error(tmp_path, monkeypatch):
  config = tiny_config(tmp_path)
  dataset = sources.load(config.dataset)
  sharding = NamedSharding(train.create_mesh(jax.devices()[:1]), P("data"))
  needed = sum(len(split) * h * w * 3 for split in (dataset.train, dataset.test)
               for h, w in [feed.stored_shape(split, config.input.image_size)])
  assert feed.free_memory() is None  # the CPU reports no memory statistics: nothing to check
  monkeypatch.setattr(feed, "decode", _decode)  # past the check, the splits would be decoded
  monkeypatch.setattr(feed, "free_memory", lambda: (needed - 1, 4 * needed))
  for placement in ("device", "auto"):  # auto: within its budget of 0.5, over what is free
    config.input.placement, config.input.device_budget = placement, 0.5
    with pytest.raises(cli.UsageError, match=r"set config.input.placement=host, or placement=auto "
                       r"with config.input.device_budget \(now 0.5\) below 0.250$"):
      feed.Feed(dataset, config.input, sharding, progress=False)
  monkeypatch.setattr(feed, "free_memory", lambda: (needed, 4 * needed))
  with pytest.raises(AssertionError, match="decoded"):  # one byte more: it goes ahead
    feed.Feed(dataset, config.input, sharding, progress=False)
  config.input.placement = "host"
  assert feed.Feed(dataset, config.input, sharding, progress=False).placement == "host"
