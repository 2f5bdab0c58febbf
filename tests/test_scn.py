"""SCN: rank regularisation, importance-weighted CE, relabelling, a tiny run."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import scn as scn_config
from fer_jax import train
from fer_jax.methods import scn
from fer_jax.models import weights
from tests import host_ops, steps


def test_rank_regularization_splits_64_into_44_and_20():
  alpha = jnp.linspace(0.0, 1.0, 64)[::-1]
  rr, high = scn.rank_regularization(alpha, 0.7, 0.15)
  assert high == 44
  gap = float(alpha[:44].mean() - alpha[44:].mean())
  np.testing.assert_allclose(float(rr), max(0.0, 0.15 - gap), atol=1e-7)
  close = jnp.full((64,), 0.5).at[:44].add(0.05)  # groups 0.05 apart: RR = 0.10
  np.testing.assert_allclose(float(scn.rank_regularization(close, 0.7, 0.15)[0]), 0.10, atol=1e-6)


def _setup(tmp_path):
  config = scn_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  model, state = steps.initial_state(config, scn)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32),
           "label": jnp.arange(8) % 7, "index": jnp.arange(8) * 2}
  return config, model, state, batch


def test_loss_is_ce_of_importance_scaled_logits_plus_rank_regularization(tmp_path):
  config, model, state, batch = _setup(tmp_path)
  loss, aux = scn.loss_fn(state.params, state, batch, None, model=model, config=config)
  (logits, feats), _ = model.apply(state.variables(), batch["image"], train=True,
                                   mutable=["batch_stats"])
  alpha = jax.nn.sigmoid(feats["importance"][:, 0])
  ce = optax.softmax_cross_entropy_with_integer_labels(alpha[:, None] * logits,
                                                       batch["label"]).mean()
  rr, _ = scn.rank_regularization(alpha, 0.7, 0.15)
  np.testing.assert_allclose(float(loss), float(ce + rr), rtol=1e-5)
  np.testing.assert_allclose(aux["logits"], logits, rtol=1e-6)  # eval/accuracy use z


def test_relabelling_starts_at_its_epoch_and_persists(tmp_path):
  config, model, state, batch = _setup(tmp_path)
  config.scn.relabel_margin = -1.0  # every sample's top class beats its label: relabel all
  loss = functools.partial(scn.loss_fn, model=model, config=config)
  _, early = loss(state.params, state, batch, None)
  assert (np.asarray(early["extra"]["relabelled"]) == -1).all()  # epoch 0 < relabel epoch 2
  later = state.replace(step=jnp.int32(2 * int(state.extra["steps_per_epoch"])))
  _, aux = loss(later.params, later, batch, None)
  table = np.asarray(aux["extra"]["relabelled"])
  assert (table[::2][:8] == np.asarray(aux["logits"]).argmax(1)).all()  # alpha > 0: same argmax
  assert (table[1::2] == -1).all()  # samples not in the batch keep their labels
  # Later steps train on the stored labels, not the ones in the batch.
  config.scn.relabel_margin = 0.2
  relabelled = later.replace(extra=aux["extra"])
  flipped = {**batch, "label": (batch["label"] + 3) % 7}
  a, _ = loss(relabelled.params, relabelled, batch, None)
  b, _ = loss(relabelled.params, relabelled, flipped, None)
  assert float(a) == float(b)


def test_basic_aug_flips_or_adds_noise():
  image = np.tile(np.arange(8, dtype=np.uint8)[None, :, None] * 30, (8, 1, 3))
  seen = set()
  for seed in range(20):
    out = host_ops.basic_aug(p=1.0)({"image": image}, np.random.default_rng(seed))["image"]
    seen.add("flip" if (out == image[:, ::-1]).all() else "noise")
  assert seen == {"flip", "noise"}


def test_tiny_run_exports_backbone_and_classifier_only(tmp_path):
  config = scn_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.progress_bar = False
  summary = train.train_and_evaluate(config, tmp_path / "run")
  assert 0.0 <= summary["final_accuracy"] <= 1.0
  variables, meta = weights.load(tmp_path / "run" / "model")
  assert set(variables["params"]) == {"backbone", "head"} and meta["has_head"]
