"""NLA: the branch test, the correlation ramp, the two Gaussians and the summed JSD against
hand-computed values; the step's loss from its parts; the official recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import nla as nla_config
from fer_jax import inference, train
from fer_jax.data import sources
from fer_jax.methods import nla, views
from tests import steps


def test_a_label_tied_at_the_top_is_on_the_true_branch():
  probs = jnp.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.5, 0.3, 0.2]])
  p_gt, p_nn, true = nla.label_and_rival(probs, jnp.array([1, 2, 0]))
  # Row 0: argmax names class 0, but the label's probability equals the maximum.
  np.testing.assert_allclose(p_gt, [0.4, 0.2, 0.5])
  np.testing.assert_allclose(p_nn, [0.4, 0.4, 0.3])
  assert true.tolist() == [True, False, True]


def test_correlation_is_zero_in_epoch_zero_and_near_one_late():
  assert float(nla.correlation_ramp(0, 60)) == 0.0
  np.testing.assert_allclose(nla.correlation_ramp(1, 60), 0.221199, rtol=1e-5)  # 1 - e^-0.25
  np.testing.assert_allclose(nla.correlation_ramp(20, 60), 0.993262, rtol=1e-5)  # 1 - e^-5


def test_gaussian_densities_by_hand():
  c = nla_config.get_config("raf_db").nla
  at = jnp.array([[0.5, 0.5], [1.0, 0.0]])
  # Epoch 0: isotropic, variance a = 0.8 (det 0.64): 1/(2 pi 0.8) at the mean, and at (1, 0)
  # the quadratic form (0.25 + 0.25) / 0.8 = 0.625.
  np.testing.assert_allclose(nla.gaussian_density(at, c.true_mean, c.true_std, c.true_ratio, -0.0),
                             [0.198944, 0.145550], rtol=1e-5)
  # eps = 1: covariance [[0.8, -0.48], [-0.48, 0.8]], det 0.4096; at (1, 0) the form is
  # (0.2 - 0.24 + 0.2) / 0.4096 = 0.390625, density exp(-0.1953125) / (2 pi 0.64).
  np.testing.assert_allclose(nla.gaussian_density(at, c.true_mean, c.true_std, c.true_ratio, -1.0),
                             [1 / (2 * np.pi * 0.64), 0.204558], rtol=1e-5)
  # The false Gaussian at its mean: a = 0.851103, b = 0.805097, det 0.0761944.
  np.testing.assert_allclose(
    nla.gaussian_density(jnp.array([[0.30, 0.15]]), c.false_mean, c.false_std, c.false_ratio, 1.0),
    [0.576579], rtol=1e-5)


def test_weights_pick_the_gaussian_of_their_branch_and_carry_gradient():
  c = nla_config.get_config("raf_db").nla
  c.t_lambda = 2.0
  labels = jnp.array([1, 2])
  probs = jnp.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
  w, _ = nla.sample_weights(probs, labels, 0.0, c)
  v = jnp.array([[0.4, 0.4], [0.2, 0.4]])
  true = nla.gaussian_density(v, c.true_mean, c.true_std, c.true_ratio, -0.0)
  false = nla.gaussian_density(v, c.false_mean, c.false_std, c.false_ratio, 1.0)
  np.testing.assert_allclose(w, [2 * true[0], false[1]], rtol=1e-6)

  logits = jnp.array([[1.0, 0.5, -0.3], [0.2, 0.1, 0.4]])

  def weighted_ce(z, live):
    w, _ = nla.sample_weights(jax.nn.softmax(z), labels, 0.5, c)
    w = w if live else jax.lax.stop_gradient(w)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, labels) * w)

  live, detached = (jax.grad(weighted_ce)(logits, flag) for flag in (True, False))
  assert float(jnp.abs(live - detached).max()) > 1e-3


def test_jsd_is_of_the_mean_logits_and_summed_over_the_batch():
  z = jnp.array([[np.log(3.0), 0.0]])  # softmax (3/4, 1/4)
  mirror = jnp.zeros((1, 2))  # (1/2, 1/2)
  # m = softmax(log(3)/2, 0) = (sqrt3, 1) / (sqrt3 + 1), not the mean of the softmaxes (5/8, 3/8):
  # 1/2 [KL(m || (3/4, 1/4)) + KL(m || (1/2, 1/2))] = 0.0346682.
  np.testing.assert_allclose(nla.summed_jsd(z, mirror), 0.0346682, rtol=1e-5)
  np.testing.assert_allclose(nla.summed_jsd(jnp.tile(z, (3, 1)), jnp.tile(mirror, (3, 1))),
                             3 * 0.0346682, rtol=1e-5)
  # A class whose m underflows to 0 adds nothing and gives no NaN gradient.
  far = jnp.array([[300.0, 0.0]])
  grad = jax.grad(lambda a: nla.summed_jsd(a, far))(far)
  assert bool(jnp.isfinite(grad).all()) and float(nla.summed_jsd(far, far)) == 0.0


def test_loss_is_the_official_sum_of_its_parts_with_the_epoch_from_the_step(tmp_path):
  config = nla_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  model, state = steps.initial_state(config, nla, num_train=16)  # 2 steps per epoch
  image = jax.random.normal(jax.random.key(2), (8, 32, 32, 3))
  batch = {"image": image, "label": jnp.arange(8) % 7}
  ((z, _), (z_mirror, _)), _ = views.apply_views(model, state.variables(),
                                                 [image, jnp.flip(image, axis=2)])
  ce = optax.softmax_cross_entropy_with_integer_labels(z, batch["label"])
  for step, epoch in ((1, 0), (5, 2)):
    at = state.replace(step=jnp.int32(step))
    loss, aux = nla.loss_fn(at.params, at, batch, jax.random.key(0), model=model, config=config)
    eps = 1 - np.exp(-15 * epoch / config.num_epochs)
    w, _ = nla.sample_weights(jax.nn.softmax(z), batch["label"], eps, config.nla)
    want = 0.5 * ce.mean() + 0.5 * jnp.mean(ce * w) + 0.5 * nla.summed_jsd(z, z_mirror)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["metrics"]["correlation"], eps, rtol=1e-6)
  # A host-made mirror is read instead of flipping on the device.
  flipped = {**batch, "image_flip": jnp.flip(image, axis=2)}
  same, _ = nla.loss_fn(state.params, state, flipped, None, model=model, config=config)
  other, _ = nla.loss_fn(state.params, state, {**batch, "image_flip": image}, None, model=model,
                         config=config)
  np.testing.assert_allclose(same, nla.loss_fn(state.params, state, batch, None, model=model,
                                               config=config)[0], rtol=1e-6)
  assert abs(float(other) - float(same)) > 1e-4


def test_official_recipe_on_raf_db():
  c = nla_config.get_config("raf_db")
  assert (c.method, c.num_epochs, c.batch_size, c.input.image_size) == ("nla", 60, 32, 224)
  o = c.optimizer
  assert (o.name, o.lr, o.weight_decay, o.schedule, o.decay_rate, o.decay_every_epochs) == (
    "adam", 1e-4, 1e-4, "exponential", 0.9, 1)
  assert c.input.train_ops == ("gaussian_noise(p=0.5, var=30.0)|resize(224)|flip_lr(p=0.5)|"
                               "random_erasing(scale=(0.02, 0.3))")


def test_tiny_run_normalises_with_the_raf_db_statistics_and_serves_with_them(tmp_path):
  config = nla_config.get_config("synthetic,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.dataset.num_train, config.num_epochs, config.progress_bar = 32, 1, False
  summary = train.train_and_evaluate(config, tmp_path / "run")
  model, variables, meta = inference.load_model(tmp_path / "run")
  assert (meta["mean"], meta["std"]) == ([0.577, 0.4494, 0.4001], [0.2628, 0.2395, 0.2383])
  probs, labels = inference.predict_source(model, variables, meta,
                                           sources.load(config.dataset).test, config.input.eval_ops)
  assert np.mean(probs.argmax(1) == labels) == summary["final_accuracy"]
  assert nla_config.get_config("raf_db,stats=imagenet").input.mean == ()
