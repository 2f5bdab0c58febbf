"""EAC: the numeric checks of eac.md §8 and one training step against a PyTorch reference."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import eac as eac_config
from fer_jax import optim
from fer_jax.methods import eac
from fer_jax.models import resnet


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("arch, channels, backbone, total", [
  ("resnet18", 512, 11_176_512, 11_180_103),
  ("resnet50", 2048, 23_508_032, 23_522_375),
  ("resnet50_caffe", 2048, 23_508_032, 23_522_375),  # stride placement changes no count
])
def test_shapes_and_parameter_counts_at_224(arch, channels, backbone, total):
  model = resnet.Classifier(arch, 7)
  x = jnp.zeros((2, 224, 224, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, feats = jax.eval_shape(model.apply, variables, x)
  assert _count(variables["params"]["backbone"]) == backbone
  assert _count(variables["params"]) == total
  assert [feats[f"stage{i}"].shape[1] for i in range(1, 5)] == [56, 28, 14, 7]
  assert feats["stage4"].shape == (2, 7, 7, channels) and logits.shape == (2, 7)
  maps = jax.eval_shape(eac.class_activation_maps, feats["stage4"],
                        variables["params"]["head"]["kernel"])
  assert maps.shape == (2, 7, 7, 7)


def test_logits_are_the_mean_of_the_maps_plus_bias():
  model = resnet.Classifier("resnet18", 7, width=8)
  x = jax.random.normal(jax.random.key(1), (3, 72, 72, 3))
  variables = model.init(jax.random.key(0), x)
  logits, feats = model.apply(variables, x)
  head = variables["params"]["head"]
  maps = eac.class_activation_maps(feats["stage4"], head["kernel"])
  assert maps.shape == (3, 3, 3, 7)
  np.testing.assert_allclose(maps.mean((1, 2)) + head["bias"], logits, rtol=1e-5, atol=1e-5)


def test_attention_consistency_values():
  j = jnp.arange(7.0)[None, None, :, None]  # the width axis of (N, H, W, K)
  shape = (2, 7, 7, 7)
  up, down = jnp.broadcast_to(j, shape), jnp.broadcast_to(6 - j, shape)
  assert eac.attention_consistency(up, down) == 0.0  # mirror images agree once flipped back
  assert float(jnp.mean((up - down) ** 2)) == pytest.approx(16.0)  # without the flip
  assert float(eac.attention_consistency(jnp.zeros(shape), up)) == pytest.approx(13.0)
  rng = np.random.default_rng(0).normal(size=shape)
  assert eac.attention_consistency(jnp.flip(rng, 2), rng) == 0.0


def _tiny_config(view="mirror", lam=5.0):
  config = eac_config.get_config("synthetic,runlocal=true")
  config.eac.second_view = view
  config.eac.lam = lam
  return config


def test_consistency_gradient_reaches_the_backbone_but_not_the_head():
  config = _tiny_config()
  model = eac.build_model(config)
  x = jax.random.normal(jax.random.key(1), (4, 72, 72, 3))
  variables = model.init(jax.random.key(0), x)
  state = types.SimpleNamespace(batch_stats=variables["batch_stats"], extra={})
  batch = {"image": x, "label": jnp.array([0, 1, 2, 3])}

  def consistency_term(params):  # the loss less its CE: lam times the consistency
    loss, aux = eac.loss_fn(params, state, batch, None, model=model, config=config)
    return loss - aux["metrics"]["ce"], aux["metrics"]["attention_consistency"]

  (term, consistency), grads = jax.value_and_grad(consistency_term, has_aux=True)(
    variables["params"])
  np.testing.assert_allclose(term, 5.0 * consistency, rtol=1e-5)
  assert all(bool((g == 0).all()) for g in jax.tree.leaves(grads["head"]))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["backbone"])) > 1e-4


def test_schedule_and_steps_per_epoch_match_the_official_run():
  config = eac_config.get_config("raf_db,arch=resnet50")
  steps = -(-12271 // config.batch_size)
  assert steps == 384
  _, lr = optim.make(config.optimizer, steps, steps * config.num_epochs)
  lr = lr["default"]
  for epoch, expected in ((1, 1e-4), (2, 9e-5), (60, 1.9967e-7)):
    assert float(lr((epoch - 1) * steps)) == pytest.approx(expected, rel=1e-4)
    assert float(lr(epoch * steps - 1)) == pytest.approx(expected, rel=1e-4)


def test_config_builds_the_second_view_as_the_official_code():
  assert _tiny_config().input.train_ops.startswith("gaussian_noise")
  noisy = eac_config.get_config("raf_db,noise_file=/x/noise01.txt")
  assert noisy.eac.second_view == "reflip" and noisy.noise.kind == "file"
  assert "flip_lr(p=1.0, key='image_flip')" in noisy.input.train_ops
  assert eac_config.get_config("raf_db").eac.second_view == "mirror"
  with pytest.raises(ValueError, match="image_flip"):
    eac.second_view({"image": jnp.zeros((1, 4, 4, 3))}, noisy)


def test_one_step_matches_pytorch():
  """The official step in PyTorch (two train-mode passes, CE on the first, 5 * MSE of the maps
  with the detached fc weight) vs train.train_step, on a small R18. SGD, not Adam, so the
  updated weights show the gradients (Adam's first step is lr * sign(g), which float noise
  flips where g ~ 0; the Adam update itself is tested in test_models_configs_optim.py)."""
  torch = pytest.importorskip("torch")
  from fer_jax.data import pipeline
  from fer_jax.models import torch_convert
  from tests import steps, torch_resnet

  ref = torch_resnet.make("resnet18", 7, width=8).train()
  # Smooth float pixels: with uint8 pixels this tiny model's loss is non-smooth in the stem
  # (finite differences agree with neither framework's gradient there), so the two pick
  # different, equally valid subgradients for conv1.
  x = np.random.default_rng(0).normal(size=(6, 72, 72, 3)).astype(np.float32)
  images = (x * pipeline.IMAGENET_STD + pipeline.IMAGENET_MEAN) * 255  # to_model_input -> x
  labels = np.array([0, 1, 2, 3, 4, 5], np.int32)

  def forward(inp):
    h = ref.maxpool(torch.relu(ref.bn1(ref.conv1(inp))))
    for i in range(1, 5):
      h = getattr(ref, f"layer{i}")(h)
    logits = ref.fc(h.mean((2, 3)))
    maps = torch.einsum("nchw,kc->nkhw", h, ref.fc.weight.detach())
    return logits, maps

  before = {k: v.clone() for k, v in ref.state_dict().items()}  # numpy views would follow torch
  variables, _ = torch_convert.torch_to_flax(
    torch_convert.find_state_dict(before, "ref"), 7, "ref")
  opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  xt = torch.tensor(x.transpose(0, 3, 1, 2))
  logits1, maps1 = forward(xt)
  _, maps2 = forward(torch.flip(xt, dims=[3]))
  ce = torch.nn.functional.cross_entropy(logits1, torch.tensor(labels, dtype=torch.long))
  ac = torch.mean((maps1 - torch.flip(maps2, dims=[3])) ** 2)
  (ce + 5 * ac).backward()
  opt.step()

  config = _tiny_config()
  config.model.width = 8
  config.optimizer.update(dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4))
  new, metrics = steps.one_step(config, eac, variables, {"image": images, "label": labels})
  ce, ac = ce.item(), ac.item()
  assert float(metrics["ce"]) == pytest.approx(ce, rel=1e-4)
  assert float(metrics["attention_consistency"]) == pytest.approx(ac, rel=1e-3)
  assert float(metrics["loss"]) == pytest.approx(ce + 5 * ac, rel=1e-4)
  expected, _ = torch_convert.torch_to_flax(
    torch_convert.find_state_dict(ref.state_dict(), "ref"), 7, "ref")
  for path in (("head", "kernel"), ("backbone", "conv1", "kernel"),
               ("backbone", "layer4_1", "conv2", "kernel")):
    got = functools.reduce(lambda t, k: t[k], path, new.params)
    want = functools.reduce(lambda t, k: t[k], path, expected["params"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Running statistics: two momentum-0.1 updates, the original view's first.
  np.testing.assert_allclose(new.batch_stats["backbone"]["bn1"]["mean"],
                             expected["batch_stats"]["backbone"]["bn1"]["mean"], atol=1e-5)
  # ... and the running variances PyTorch's way (unbiased batch variance), in the last layer too.
  for path in (("bn1",), ("layer4_1", "bn2")):
    got = functools.reduce(lambda t, k: t[k], path, new.batch_stats["backbone"])["var"]
    want = functools.reduce(lambda t, k: t[k], path, expected["batch_stats"]["backbone"])["var"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
