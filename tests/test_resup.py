"""ReSup: the table lookup, the swapped weights, the Beta mixture fit and its table, the
end-of-epoch pass (resumed exactly, on both input paths, over two devices), network 0 served."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import resup as resup_config
from fer_jax import epoch_pass, inference, train
from fer_jax.data import feed, sources
from fer_jax.methods import resup
from tests import steps


def test_lookup_truncates_the_float32_product_after_the_code_clip():
  table = jnp.arange(100, dtype=jnp.float32) / 100
  cosines = jnp.array([0.0, -0.2, 1.0, 0.999999, 0.5, 0.123, 0.0099999, 0.29], jnp.float32)
  # 0 and below -> 0.001 (index 0, weight clamped up to 1e-4); 1 -> 0.999 (index 99), but a
  # cosine an ulp below 1 is not clipped; 100 * float32(0.29) is 29.0 in float32 (28 in float64).
  np.testing.assert_allclose(resup.lookup(table, cosines),
                             [1e-4, 1e-4, 0.99, 0.99, 0.5, 0.12, 1e-4, 0.29], rtol=1e-6)
  assert float(resup.lookup(jnp.ones(100), jnp.array([0.5]))[0]) == np.float32(1 - 1e-4)


def test_label_cosine():
  logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
  np.testing.assert_allclose(resup.label_cosines(logits, jnp.array([1])),
                             [0.3 / np.sqrt(0.36 + 0.09 + 0.01)], rtol=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  config = resup_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path_factory.mktemp("cache"))
  model, state = steps.initial_state(config, resup, num_train=16)  # 2 steps per epoch
  batch = {"image": jax.random.normal(jax.random.key(2), (8, 32, 32, 3)),
           "label": jnp.arange(8) % 7}
  return config, model, state, batch


def test_two_independent_classifiers_and_initial_extra(tiny):
  config, _, state, _ = tiny
  assert set(state.params) == {"backbone", "head", "peer_backbone", "peer_head"}
  one = sum(x.size for k in ("backbone", "head") for x in jax.tree.leaves(state.params[k]))
  assert sum(x.size for x in jax.tree.leaves(state.params)) == 2 * one
  assert not np.allclose(state.params["head"]["kernel"], state.params["peer_head"]["kernel"])
  extra = state.extra
  assert extra["posterior_table"].shape == (2, 100) and extra["posterior_table"].dtype == jnp.float32
  assert extra["steps_per_epoch"].dtype == jnp.int32 and int(extra["steps_per_epoch"]) == 2
  assert config.num_epochs == 2 and resup_config.get_config("raf_db").method == "resup"


def test_epoch_zero_is_plain_ce_then_each_network_takes_the_others_weight(tiny):
  config, model, state, batch = tiny
  (z0, feats), _ = model.apply(state.variables(), batch["image"], train=True,
                               mutable=["batch_stats"])
  z1 = feats["peer_logits"]
  ce = optax.softmax_cross_entropy_with_integer_labels
  ce0, ce1 = ce(z0, batch["label"]), ce(z1, batch["label"])
  table = jnp.stack([jnp.full(100, 0.25), jnp.full(100, 0.75)])
  later = state.replace(step=jnp.int32(2), extra={**state.extra, "posterior_table": table})

  def loss(params, at):
    return resup.loss_fn(params, at, batch, None, model=model, config=config)

  np.testing.assert_allclose(loss(state.params, state.replace(step=jnp.int32(1)))[0],
                             jnp.mean(ce0 + ce1), rtol=1e-5)
  # Network 0's CE weighted by network 1's table and the reverse, plus 5 x the per-class MSE.
  mse = jnp.mean((jax.nn.softmax(z0) - jax.nn.softmax(z1)) ** 2, axis=1)
  np.testing.assert_allclose(loss(state.params, later)[0],
                             jnp.mean(0.75 * ce0 + 0.25 * ce1 + 5 * mse), rtol=1e-5)
  # Without the MSE, each head's gradient is its own CE's, scaled by the other's weight.
  config.resup.mse_weight = 0.0
  try:
    grads = jax.grad(lambda p: loss(p, later)[0])(state.params)
    plain = jax.grad(lambda p: loss(p, state.replace(step=jnp.int32(1)))[0])(state.params)
  finally:
    config.resup.mse_weight = 5.0
  np.testing.assert_allclose(grads["head"]["kernel"], 0.75 * plain["head"]["kernel"], atol=1e-6)
  np.testing.assert_allclose(grads["peer_head"]["kernel"], 0.25 * plain["peer_head"]["kernel"],
                             atol=1e-6)


def test_one_em_iteration_by_hand(monkeypatch):
  # x = (0.25, 0.75): responsibilities (0.75, 0.25) and (0.25, 0.75); the clean component's
  # weighted mean 0.625, variance 0.046875, so Beta(2.5, 1.5), the noisy one its mirror
  # Beta(1.5, 2.5), weights 1/2. Their posterior is then g / (g + 1 - g) = g: entry j is j / 99.
  monkeypatch.setattr(resup, "FIT_ITERATIONS", 1)
  fit = resup.clean_posterior(np.array([0.25, 0.75], np.float32))
  np.testing.assert_allclose(fit["alpha"], [1.5, 2.5], rtol=1e-12)
  np.testing.assert_allclose(fit["beta"], [2.5, 1.5], rtol=1e-12)
  np.testing.assert_allclose(fit["weight"], [0.5, 0.5], rtol=1e-12)
  np.testing.assert_allclose(fit["table"][:99], np.arange(99) / 99, atol=1e-9)
  # At g = 1 - 1e-12 the clean density is only 0.5 * 1e-6 / B(2.5, 1.5) = 2.5465e-6, so the code's
  # 1e-12 in the denominator shows: 1 - 1e-12 / 2.5465e-6.
  np.testing.assert_allclose(fit["table"][99], 1 - 3.92704e-7, rtol=1e-11)


def test_fit_is_symmetric_for_mirrored_cosines_and_clips_as_the_step():
  x = np.array([0.1, 0.2, 0.35, 0.9, 0.8, 0.65], np.float32)
  fit = resup.clean_posterior(x)
  np.testing.assert_allclose(fit["alpha"], fit["beta"][::-1], rtol=1e-6)
  np.testing.assert_allclose(fit["weight"], [0.5, 0.5], rtol=1e-6)
  assert fit["table"].dtype == np.float64 and fit["table"].shape == (100,)
  assert np.all(np.diff(fit["table"]) >= 0)
  # A cosine of exactly 1 counts as 0.999 and one of 0 as 0.001, not as the fit's own 1e-4 clip.
  clipped = resup.clean_posterior(np.array([0.001, 0.3, 0.6, 0.999], np.float32))
  raw = resup.clean_posterior(np.array([0.0, 0.3, 0.6, 1.0], np.float32))
  np.testing.assert_array_equal(raw["table"], clipped["table"])
  assert not np.allclose(resup.clean_posterior(np.array([0.0001, 0.3, 0.6, 0.9999],
                                                         np.float32))["table"], raw["table"])


def test_table_is_flattened_right_of_its_peak_only():
  # A narrow clean bump at 0.5 among low cosines: its posterior falls again above the bump.
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(0.02, 0.2, 300), rng.normal(0.5, 0.02, 200)]).astype(np.float32)
  table = resup.clean_posterior(x)["table"]
  peak = int(np.argmax(table))
  assert 30 < peak < 80
  assert np.all(table[peak:] == table[peak])
  assert table[peak // 2] < 0.5 * table[peak]  # left of the peak: the posterior itself


def test_degenerate_fit_is_nan_as_the_code_and_keeps_the_previous_table(caplog):
  same = np.full(10, 0.5, np.float32)
  assert np.isnan(resup.clean_posterior(same)["table"]).all()
  previous = np.stack([np.linspace(0, 1, 100), np.full(100, 0.3)]).astype(np.float32)
  cosines = np.stack([np.linspace(0.05, 0.95, 10), same], 1).astype(np.float32)
  updated = resup.after_epoch({"posterior_table": previous}, {"cosines": cosines}, None)
  table = updated["posterior_table"]
  np.testing.assert_allclose(table[0], resup.clean_posterior(cosines[:, 0])["table"], rtol=1e-6)
  np.testing.assert_array_equal(table[1], previous[1])
  assert "network 1's Beta mixture fit is degenerate" in caplog.text


def test_end_of_epoch_pass_reads_every_training_example_once_on_both_paths(tmp_path):
  config = resup_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.dataset.num_train = 21  # three batches of 8, the last padded
  dataset = sources.load(config.dataset)
  mesh = train.create_mesh(jax.devices())
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  seen = {}
  for placement in ("device", "host"):
    config.input.placement = placement
    inputs = feed.Feed(dataset, config.input, sharding, progress=False)
    batches = [jax.device_get(b) for b in epoch_pass.train_split_batches(inputs, 8)]
    index = np.concatenate([b["index"][b["_mask"]] for b in batches])
    assert len(batches) == 3 and sorted(index.tolist()) == list(range(21))
    seen[placement] = batches
  for a, b in zip(seen["device"], seen["host"], strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _run(tmp_path, name, **overrides):
  config = resup_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.dataset.num_train = 32
  config.progress_bar = False
  config.checkpoint_every_steps = 1000
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    target = config
    for p in path:
      target = target[p]
    target[leaf] = value
  return config, train.train_and_evaluate(config, tmp_path / name)


def test_end_of_epoch_pass_resumes_exactly_on_both_input_paths_and_serves_network_0(tmp_path):
  assert jax.device_count() == 2, "conftest forces 2 host devices"
  config, whole = _run(tmp_path, "whole", **{"input.placement": "device"})
  _run(tmp_path, "split", num_epochs=1, **{"input.placement": "host"})
  _, split = _run(tmp_path, "split", **{"input.placement": "host"})
  for a, b in zip(whole["history"], split["history"], strict=True):
    assert a["accuracy"] == b["accuracy"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  rows = {}
  for name in ("whole", "split"):
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    rows[name] = {r["step"]: r for r in map(json.loads, lines) if "train_weight" in r}
  # Epoch 1 used the tables refitted after epoch 0 (the weights left their initial 1 - 1e-4).
  last = max(rows["whole"])
  np.testing.assert_allclose(rows["split"][last]["train_weight"],
                             rows["whole"][last]["train_weight"], rtol=1e-5)
  assert rows["whole"][last]["train_weight"] < 0.999
  # model/ holds network 0 alone and serves its predictions: the last eval's confusion matrix.
  model, variables, meta = inference.load_model(tmp_path / "whole")
  assert set(variables["params"]) == {"backbone", "head"}
  probs, labels = inference.predict_source(model, variables, meta,
                                           sources.load(config.dataset).test, config.input.eval_ops)
  confusion = np.zeros((7, 7), int)
  np.add.at(confusion, (labels, probs.argmax(1)), 1)
  assert confusion.tolist() == whole["confusion_matrix"]
