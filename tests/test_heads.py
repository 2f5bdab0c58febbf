"""Heads in float32 under a bfloat16 backbone: logits and head outputs are not rounded to
bfloat16's 8-bit mantissa, so the methods' decisions (NCCTFER's masks and thresholds, SCN's
relabels) are those of a float32 head on the same backbone features.

The heads here are set so that their outputs sit near 12 within 0.001 of each other: bfloat16's
step there is 0.0625, so a bfloat16 head makes them exact ties, which top_k, argmax and the
threshold comparisons break by class index (on the CPU, where XLA keeps the excess precision
of a bfloat16 sum, the bfloat16-rounded features and kernel alone reorder them)."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ncct as ncct_config
from configs import scn as scn_config
from fer_jax.methods import ncct, scn, views
from fer_jax.models import landmark_aware, resnet

BATCH = 16
# 100 float32 steps at 12, far inside bfloat16's step there (0.0625) and its relative error
# (2^-9) on features and kernel.
SPACING = 1e-4
# What the two methods' loss functions read of a train state.
State = collections.namedtuple("State", "params batch_stats extra step")


def _config(module, arg="synthetic,runlocal=true"):
  config = module.get_config(arg)
  config.dtype = "bfloat16"
  return config


@functools.cache
def _forward(model):
  """(logits, features) of a train-mode pass, jitted once per model."""
  return jax.jit(lambda variables, x: model.apply(variables, x, train=True,
                                                  mutable=["batch_stats"])[0])


def _variables(state):
  return {"params": state.params, "batch_stats": state.batch_stats}


def _images(seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(BATCH, 32, 32, 3)), jnp.float32)


def _head_for(features, outputs):
  """{kernel, bias} of a linear head whose exact outputs on `features` (B, F) are `outputs`
  (B, C): the minimum-norm kernel (B < F), no bias, so that the dot product itself carries
  outputs near 12 (terms that bfloat16's 2^-9 relative rounding moves by ~0.02)."""
  kernel = np.linalg.lstsq(np.asarray(features, np.float64), outputs, rcond=None)[0]
  return {"kernel": jnp.asarray(kernel, jnp.float32),
          "bias": jnp.zeros(outputs.shape[1], jnp.float32)}


def _float32_head(features, head):
  """The head in float64 numpy on the same backbone features, rounded to float32 at the end."""
  out = np.asarray(features, np.float64) @ np.asarray(head["kernel"], np.float64)
  return (out + np.asarray(head["bias"], np.float64)).astype(np.float32)


def _near_twelve(rng, classes):
  """(BATCH, classes) outputs 12 + distinct offsets SPACING apart, their order varying per row."""
  return 12 + SPACING * rng.permuted(np.tile(np.arange(classes), (BATCH, 1)), axis=1)


def _two_way(rng, classes):
  """(BATCH, classes) logits 12 +- d on classes 0 and 1 (d SPACING apart, both signs), 0
  elsewhere: p_0 near 0.5, on either side of the batch's threshold."""
  d = SPACING * (rng.permutation(BATCH) - (BATCH - 1) / 2)
  out = np.zeros((BATCH, classes))
  out[:, 0], out[:, 1] = 12 + d, 12 - d
  return out


@pytest.fixture(scope="module")
def setup():
  """(config, model, state): one bfloat16 network with NCCTFER's and SCN's heads, which both
  methods' steps run (each reads its own head), and a state holding both methods' extras."""
  config = _config(scn_config)
  config.ncct = ncct_config.get_config("synthetic,runlocal=true").ncct
  m = config.model
  model = resnet.Classifier(m.arch, m.num_classes, m.width, "bfloat16",
                            extra_heads=(("negative_head", 7), ("importance", 1)))
  variables = jax.jit(model.init)(jax.random.key(0), _images(0))
  extra = scn.init_extra(config, 2 * BATCH, None, variables)
  state = State(variables["params"], variables["batch_stats"], extra, jnp.int32(0))
  return config, model, state


def test_heads_are_float32_and_exact_under_a_bfloat16_backbone(setup):
  _, model, state = setup
  logits, feats = _forward(model)(_variables(state), _images(0))
  assert feats["stage4"].dtype == jnp.bfloat16  # the backbone stays in the compute dtype
  for name in ("head", "negative_head", "importance"):
    got = logits if name == "head" else feats[name]
    assert got.dtype == jnp.float32, name
    np.testing.assert_allclose(got, _float32_head(feats["pre_logits"], state.params[name]),
                               rtol=1e-6, atol=1e-6, err_msg=name)
  # RUL's neck (its feature mu) and LA-Net's projections read bfloat16 backbone outputs.
  fmap = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 2, 16)), jnp.bfloat16)
  neck = resnet.UncertaintyNeck(features=8)
  variables = neck.init(jax.random.key(0), fmap, False)
  mu = neck.apply(variables, fmap, False)
  fc = variables["params"]["fc"]
  hidden = _float32_head(np.asarray(fmap, np.float32).reshape(4, -1), fc)
  expected = (hidden - variables["batch_stats"]["bn_out"]["mean"]) / np.sqrt(1 + 2e-5)
  assert mu.dtype == jnp.float32
  np.testing.assert_allclose(mu, expected, rtol=1e-5, atol=1e-5)
  u = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.bfloat16).astype(jnp.float32)
  projection = landmark_aware.Projection(16)
  variables = projection.init(jax.random.key(0), u)
  hidden = np.maximum(_float32_head(u, variables["params"]["fc1"]), 0)
  out = _float32_head(hidden, variables["params"]["fc2"])
  np.testing.assert_allclose(projection.apply(variables, u),
                             out / np.linalg.norm(out, axis=1, keepdims=True), rtol=1e-5)


def test_ncct_masks_and_thresholds_equal_a_float32_heads(setup):
  config, model, state = setup
  weak, strong = _images(1), _images(2)
  two_views = jax.jit(lambda variables: views.apply_views(model, variables, [weak, strong])[0][0])
  _, feats = two_views(_variables(state))
  rng = np.random.default_rng(0)
  params = {**state.params, "head": _head_for(feats["pre_logits"], _two_way(rng, 7)),
            "negative_head": _head_for(feats["pre_logits"], _near_twelve(rng, 7))}
  state = state._replace(params=params)
  weak_logits, weak_feats = two_views(_variables(state))
  ref_logits = _float32_head(weak_feats["pre_logits"], params["head"])
  ref_negative = _float32_head(weak_feats["pre_logits"], params["negative_head"])
  labels = jnp.asarray(np.arange(BATCH) % 2)

  sure, thresholds = ncct.confident(jax.nn.softmax(weak_logits), labels, "clamped_batch_mean")
  ref_sure, ref_thresholds = ncct.confident(jax.nn.softmax(ref_logits), labels,
                                            "clamped_batch_mean")
  assert 0 < int(ref_sure.sum()) < BATCH  # the reference splits the batch
  np.testing.assert_array_equal(sure, ref_sure)
  np.testing.assert_allclose(thresholds, ref_thresholds, rtol=1e-6)
  mask = ncct.least_probable_mask(jax.nn.softmax(weak_feats["negative_head"]), config.ncct.k)
  ref_mask = ncct.least_probable_mask(jax.nn.softmax(ref_negative), config.ncct.k)
  np.testing.assert_array_equal(mask, ref_mask)

  # The step itself logs the same thresholds (after the warm-up, as a robust step).
  robust = state._replace(step=jnp.int32(config.ncct.warmup_epochs
                                        * int(state.extra["steps_per_epoch"])))
  batch = {"image": weak, "image_strong": strong, "label": labels}
  _, aux = jax.jit(functools.partial(ncct.loss_fn, model=model, config=config))(
    robust.params, robust, batch, None)
  np.testing.assert_allclose([aux["metrics"][f"threshold_{i}"] for i in range(7)],
                             ref_thresholds, rtol=1e-6)
  assert float(aux["metrics"]["confident_weak"]) == float(ref_sure.mean())


def test_scn_relabels_equal_a_float32_heads(setup):
  config, model, state = setup
  images = _images(3)
  _, feats = _forward(model)(_variables(state), images)
  rng = np.random.default_rng(1)
  # Every label (class 6) is far below the two near-tied top classes: each sample is relabelled
  # (gap ~0.5 > 0.2), to whichever of classes 0 and 1 its float32 logits put first.
  importance = np.linspace(0, 1, BATCH)[:, None]  # alpha in (0.5, 0.73)
  params = {**state.params, "head": _head_for(feats["pre_logits"], _two_way(rng, 7)),
            "importance": _head_for(feats["pre_logits"], importance)}
  state = state._replace(params=params,
                   step=jnp.int32(config.scn.relabel_epoch
                                       * int(state.extra["steps_per_epoch"])))
  batch = {"image": images, "label": jnp.full((BATCH,), 6), "index": jnp.arange(BATCH) * 2}
  _, aux = jax.jit(functools.partial(scn.loss_fn, model=model, config=config))(
    state.params, state, batch, None)
  ref_logits = _float32_head(feats["pre_logits"], params["head"])
  ref_alpha = 1 / (1 + np.exp(-_float32_head(feats["pre_logits"], params["importance"])))
  expected = np.argmax(ref_alpha * ref_logits, 1)
  assert set(expected.tolist()) == {0, 1}
  np.testing.assert_array_equal(np.asarray(aux["extra"]["relabelled"])[::2], expected)
