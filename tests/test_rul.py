"""RUL: the spec's mixing identities, the gradient path of the uncertainty, export with its neck."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import rul as rul_config
from fer_jax import inference, train
from fer_jax.methods import rul
from tests import steps


def test_equal_uncertainties_mix_to_the_midpoint_and_fixed_points_to_themselves():
  mu = jax.random.normal(jax.random.key(0), (4, 6))
  same = jnp.zeros((4, 6))
  z, lam = rul.mix(mu, same, jnp.array([1, 0, 3, 2]))
  np.testing.assert_allclose(lam, 0.5)
  np.testing.assert_allclose(z, 0.5 * (mu + mu[jnp.array([1, 0, 3, 2])]), rtol=1e-6)
  log_var = jax.random.normal(jax.random.key(1), (4, 6))
  z, _ = rul.mix(mu, log_var, jnp.arange(4))
  np.testing.assert_allclose(z, mu, rtol=1e-6)
  # The more uncertain sample of a pair gets the larger share.
  _, lam = rul.mix(mu, jnp.array([[1.0] * 6, [0.0] * 6, [0.0] * 6, [0.0] * 6]),
                   jnp.array([1, 0, 3, 2]))
  assert float(lam[0]) > 0.5 > float(lam[1])


def _state(tmp_path):
  config = rul_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  model, state = steps.initial_state(config, rul)
  batch = {"image": jax.random.normal(jax.random.key(2), (8, 32, 32, 3)),
           "label": jnp.arange(8) % 7}
  return config, model, state, batch


def test_uncertainty_learns_only_through_the_mixing(tmp_path, monkeypatch):
  config, model, state, batch = _state(tmp_path)

  def log_var_grads():  # of the log_var branch alone: no backward pass through the backbone
    def fn(log_var):
      params = {**state.params, "log_var": log_var}
      return rul.loss_fn(params, state, batch, jax.random.key(3), model=model, config=config)[0]
    return jax.grad(fn)(state.params["log_var"])

  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(log_var_grads())) > 0
  # With every sample its own partner the loss is plain CE of fc(mu): no signal for log_var.
  monkeypatch.setattr(jax.random, "permutation", lambda key, n: jnp.arange(n))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(log_var_grads())) == 0
  loss, _ = rul.loss_fn(state.params, state, batch, jax.random.key(3), model=model, config=config)
  (_, feats), _ = model.apply(state.variables(), batch["image"], train=True,
                              mutable=["batch_stats"], rngs={"dropout": jax.random.split(
                                jax.random.key(3))[1]})
  logits = feats["mu"] @ state.params["head"]["kernel"] + state.params["head"]["bias"]
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  np.testing.assert_allclose(float(loss), float(plain), rtol=1e-5)


def test_classifier_learns_ten_times_faster():
  config = rul_config.get_config("raf_db")
  assert config.optimizer.lr == 2e-4 and config.optimizer.param_group_lrs == ((r"^head/", 2e-3),)


def test_tiny_run_exports_the_mu_branch_for_predict(tmp_path):
  config = rul_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.progress_bar = False
  train.train_and_evaluate(config, tmp_path / "run")
  model, variables, meta = inference.load_model(tmp_path / "run")
  assert set(variables["params"]) == {"backbone", "neck", "head"} and meta["neck"] == "uncertainty"
  logits, _ = model.apply(variables, jnp.zeros((2, 32, 32, 3)), train=False)
  assert logits.shape == (2, 7) and bool(jnp.isfinite(logits).all())
