"""The two input paths: decoded splits on the devices vs the host pipeline."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fer_jax import train
from fer_jax.data import feed, sources
from tests.test_train import tiny_config


def _sharding(devices):
  return NamedSharding(train.create_mesh(devices), P("data"))


def _batches(config, inputs, n=3, batch_size=8):
  it = iter(train.train_input(config, inputs, batch_size, steps_per_epoch=12))
  return [jax.device_get(inputs.put(next(it))) for _ in range(n)]


@pytest.mark.parametrize("devices", [1, 2])
def test_device_path_batches_equal_host_path_batches(tmp_path, devices):
  """Same sampler, same rows, labels, landmarks and pixels, on one device and on two."""
  from configs import lanet  # synthetic faces with landmarks, the progressive sampler

  config = lanet.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  dataset = sources.load(config.dataset)
  sharding = _sharding(jax.devices()[:devices])
  paths = {}
  for placement in ("device", "host"):
    config.input.placement = placement
    inputs = feed.Feed(dataset, config.input, sharding, progress=False)
    assert inputs.placement == placement
    paths[placement] = (_batches(config, inputs),
                        [jax.device_get(b) for b in inputs.eval_batches(16)])
  (dev_train, dev_eval), (host_train, host_eval) = paths["device"], paths["host"]
  assert set(dev_train[0]) == set(host_train[0]) >= {"image", "label", "index", "landmarks"}
  for a, b in zip(dev_train + dev_eval, host_train + host_eval, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert len(dev_eval) == -(-len(dataset.test) // 16)
  # The rows really are the sampler's: three different batches.
  assert len({tuple(b["index"]) for b in dev_train}) == 3


def test_mixed_image_sizes_are_batched_at_the_training_size():
  images = [np.full((h, w, 3), 100, np.uint8) for h, w in ((40, 30), (50, 50), (20, 60))]
  store = type("Store", (), {"__len__": lambda s: 3, "__getitem__": lambda s, i: {
    "image": images[i], "landmarks": np.ones((19, 2), np.float32) * 10}})()
  source = sources.LabelledSource(store, np.array([0, 1, 2], np.int32), ("a", "b", "c"))
  assert feed.stored_shape(source, 32) == (32, 32)
  decoded, fields = feed.decode(source, (32, 32), np.arange(3), progress=False)
  assert decoded.shape == (3, 32, 32, 3) and (decoded == 100).all()
  # Landmarks scale with their image: 10 * 32 / 30 along x, 10 * 32 / 40 along y for image 0.
  np.testing.assert_allclose(fields["landmarks"][0, 0], [10 * 32 / 30, 10 * 32 / 40], rtol=1e-6)
  uniform = sources.LabelledSource(sources.ArrayStore(np.zeros((5, 24, 20, 3), np.uint8)),
                                   np.zeros(5, np.int32), tuple("abcde"))
  assert feed.stored_shape(uniform, 32) == (24, 20)  # kept as they are


def test_auto_placement_follows_the_memory_budget_and_says_why(tmp_path):
  config = tiny_config(tmp_path)
  dataset = sources.load(config.dataset)
  sharding = _sharding(jax.devices())
  inputs = feed.Feed(dataset, config.input, sharding, progress=False)
  assert inputs.placement == "device" and "within the budget" in feed.describe(inputs)
  config.input.device_budget = 1e-12
  inputs = feed.Feed(dataset, config.input, sharding, progress=False)
  assert inputs.placement == "host" and "over the budget" in feed.describe(inputs)
  config.input.placement = "disk"
  with pytest.raises(ValueError, match=r"config.input.placement='disk'.*auto"):
    feed.Feed(dataset, config.input, sharding, progress=False)


def test_a_run_trains_the_same_on_either_path(tmp_path):
  """Augmentation happens in the step on both paths: the same run, the same numbers."""
  summaries = {}
  for placement in ("device", "host"):
    config = tiny_config(tmp_path, **{"input.placement": placement, "num_epochs": 1})
    summaries[placement] = train.train_and_evaluate(config, tmp_path / placement)
    log = (tmp_path / placement / "metrics.jsonl").read_text().splitlines()
    summaries[placement]["train_loss"] = [json.loads(line).get("train_loss") for line in log]
  device, host = summaries["device"], summaries["host"]
  assert device["history"][0]["accuracy"] == host["history"][0]["accuracy"]
  np.testing.assert_allclose(device["history"][0]["loss"], host["history"][0]["loss"], rtol=1e-6)
  np.testing.assert_allclose([x for x in device["train_loss"] if x is not None],
                             [x for x in host["train_loss"] if x is not None], rtol=1e-6)
