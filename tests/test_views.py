"""PyTorch's BatchNorm update, and the batched two-view pass against two successive passes."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eac as eac_config
from configs import ncct as ncct_config
from fer_jax.methods import eac, ncct, views
from fer_jax.models import resnet


@pytest.mark.parametrize("shape", [(6, 5, 5, 4), (6, 4)])
def test_batch_norm_updates_as_pytorch_with_the_unbiased_variance(shape):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).normal(3.0, 2.0, size=shape).astype(np.float32)
  norm = resnet.BatchNorm(use_running_average=False)
  variables = norm.init(jax.random.key(0), x)
  y, mutated = norm.apply(variables, x, mutable=["batch_stats"])
  ref = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[-1]).train()
  xt = torch.tensor(x if len(shape) == 2 else x.transpose(0, 3, 1, 2))
  yt = ref(xt).detach().numpy()
  np.testing.assert_allclose(y, yt if len(shape) == 2 else yt.transpose(0, 2, 3, 1), atol=2e-6)
  np.testing.assert_allclose(mutated["batch_stats"]["mean"], ref.running_mean, rtol=1e-6)
  # The unbiased variance: n / (n - 1) times the batch's, with n = 150 or 6 values per channel.
  np.testing.assert_allclose(mutated["batch_stats"]["var"], ref.running_var, rtol=1e-6)
  biased = 0.9 + 0.1 * x.reshape(-1, shape[-1]).var(0)
  assert np.abs(np.asarray(mutated["batch_stats"]["var"]) - biased).max() > 1e-3


def _two_pass(model, variables, first, second, **kwargs):
  """The official order: two train-mode passes, running statistics threaded through."""
  out1, mutated = model.apply(variables, first, train=True, mutable=["batch_stats"], **kwargs)
  out2, mutated = model.apply({**variables, **mutated}, second, train=True,
                              mutable=["batch_stats"], **kwargs)
  return [out1, out2], mutated


def _eac_loss(apply_two):
  config = eac_config.get_config("synthetic,runlocal=true")

  def loss(params, batch_stats, batch):
    ((logits, feats), (_, mirror)), mutated = apply_two(
      eac.build_model(config), {"params": params, "batch_stats": batch_stats},
      [batch["image"], jnp.flip(batch["image"], 2)])
    kernel = params["head"]["kernel"]
    consistency = eac.attention_consistency(eac.class_activation_maps(feats["stage4"], kernel),
                                            eac.class_activation_maps(mirror["stage4"], kernel))
    ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["label"][:, None], 1).mean()
    return ce + 5 * consistency, mutated["batch_stats"]

  return config, loss


def _assert_same(a, b):
  """Equal up to float32 summation order, relative to each leaf's scale (statistics mixed
  across views move values by a tenth of their scale)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-4 * float(np.abs(y).max()) + 1e-7)


def test_batched_views_equal_two_passes_in_eac():
  config, batched = _eac_loss(lambda m, v, xs: views.apply_views(m, v, xs))
  _, reference = _eac_loss(lambda m, v, xs: _two_pass(m, v, *xs))
  model = eac.build_model(config)
  x = jax.random.normal(jax.random.key(1), (6, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  batch = {"image": x, "label": jnp.arange(6) % 7}
  grad = jax.jit(jax.value_and_grad(batched, has_aux=True))
  ref_grad = jax.jit(jax.value_and_grad(reference, has_aux=True))
  (loss, stats), grads = grad(variables["params"], variables["batch_stats"], batch)
  (ref_loss, ref_stats), ref_grads = ref_grad(variables["params"], variables["batch_stats"], batch)
  assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
  _assert_same(grads, ref_grads)
  _assert_same(stats, ref_stats)
  # Both updates happened, in view order: from 0, the running mean is 0.09 mu_1 + 0.1 mu_2 with
  # mu_v a view's batch mean (0.19 of the way where the views' means agree), not one update's
  # 0.1 of the concatenated batch's mean or of the last view's.
  def batch_mean(images):  # bn1's batch mean of one view: 10x its first update from 0
    _, one = model.apply(variables, images, train=True, mutable=["batch_stats"])
    return np.asarray(one["batch_stats"]["backbone"]["bn1"]["mean"]) / 0.1

  mu1, mu2 = batch_mean(x), batch_mean(jnp.flip(x, 2))
  running = np.asarray(stats["backbone"]["bn1"]["mean"])
  np.testing.assert_allclose(running, 0.09 * mu1 + 0.1 * mu2, rtol=1e-4, atol=1e-7)
  for wrong in (0.1 * (mu1 + mu2) / 2, 0.1 * mu2, 0.09 * mu2 + 0.1 * mu1):  # or in swapped order
    assert not np.allclose(running, wrong, rtol=1e-4, atol=1e-7)


def test_batched_views_equal_two_passes_in_ncct():
  config = ncct_config.get_config("synthetic,runlocal=true")
  model = ncct.build_model(config)
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  batch = {"image": x, "image_strong": x[:, ::-1] * 0.5, "label": jnp.arange(8) % 7}
  state = types.SimpleNamespace(batch_stats=variables["batch_stats"], step=jnp.int32(50),
                                extra={"steps_per_epoch": jnp.int32(10)})

  def loss(params, apply_two):
    original = views.apply_views
    views.apply_views = lambda m, v, xs: apply_two(m, v, xs)
    try:
      value, aux = ncct.loss_fn(params, state, batch, jax.random.key(2), model=model,
                                config=config)
    finally:
      views.apply_views = original
    return value, aux["batch_stats"]

  batched = jax.value_and_grad(lambda p: loss(p, views.apply_views), has_aux=True)
  two = jax.value_and_grad(lambda p: loss(p, lambda m, v, xs: _two_pass(m, v, *xs)),
                           has_aux=True)
  (value, stats), grads = batched(variables["params"])
  (ref_value, ref_stats), ref_grads = two(variables["params"])
  assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
  _assert_same(grads, ref_grads)
  _assert_same(stats, ref_stats)
