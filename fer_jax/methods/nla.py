"""NLA, Navigating Label Ambiguity (Lee et al., AAAI 2025), as its official code trains (HEAD
b86f31f, whose per-sample Gaussian replaced the batch-coupled one of the first release).
Spec: ../shared/specs/nla_resup.md §1.

Per step, on the augmented image and its mirror (the flipped final tensor: same pixel noise,
the erased box mirrored):
  1. two train-mode forward passes, the image first, each with its own batch statistics
     (`views.apply_views`);
  2. CE on the image only; p = softmax of the image's logits;
  3. v_i = (P_GT, P_NN): the label's probability and the largest other one. A sample is on the
     "true" branch when P_GT equals the largest probability (a tie with another class counts
     as true);
  4. w_i = t_lambda * N_true(v_i) on the true branch, N_false(v_i) otherwise: full normalised
     2-D Gaussian densities. The true Gaussian has mean (0.5, 0.5) and covariance
     [[a, -b eps], [-b eps, a]] with a = s^2 + (s/r)^2, b = s^2 - (s/r)^2 (s 0.8, r 2) and
     eps = 1 - exp(-15 t / T) (t the 0-based epoch, T = num_epochs); the false one mean
     (0.30, 0.15) and the fixed covariance [[a, b], [b, a]] (s 0.91, r 6). w is live: the loss's
     gradient flows through it;
  5. JSD = 1/2 [KL(m || p) + KL(m || p')] with m = softmax of the *mean logits* of the two views,
     each KL summed over the batch and the classes (torch kl_div, reduction 'sum');
  6. L = lam * mean(CE) + lam * mean(CE * w) + (1 - lam) * JSD, lam = 0.5.
"""

import jax
import jax.numpy as jnp
import optax

from fer_jax import schedule
from fer_jax.methods import known_flips, views
from fer_jax.models import resnet


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype)


def init_extra(config, num_train, rng, variables):
  del rng, variables
  return {"steps_per_epoch": jnp.int32(schedule.epoch_steps(config, num_train))}


def correlation_ramp(epoch, num_epochs, rate=15.0):
  """eps(t) = 1 - exp(-rate t / T): 0 in epoch 0, towards 1 by the end."""
  return 1.0 - jnp.exp(-rate * jnp.asarray(epoch, jnp.float32) / num_epochs)


def gaussian_density(v, mean, std, ratio, correlation_sign):
  """The density at v (B, 2) of the 2-D Gaussian with the given mean and covariance
  [[a, c], [c, a]], a = std^2 + (std/ratio)^2, c = correlation_sign * (std^2 - (std/ratio)^2);
  float32, with the closed-form 2x2 inverse."""
  a = std**2 + (std / ratio) ** 2
  c = correlation_sign * (std**2 - (std / ratio) ** 2)
  det = a * a - c * c
  d0, d1 = v[:, 0] - mean[0], v[:, 1] - mean[1]
  quadratic = (a * d0 * d0 - 2 * c * d0 * d1 + a * d1 * d1) / det
  return jnp.exp(-0.5 * quadratic) / (2 * jnp.pi * jnp.sqrt(det))


def label_and_rival(probs, labels):
  """(P_GT, P_NN, on the true branch): the label's probability, the largest other one, and
  whether the label's probability is the largest (ties included)."""
  onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=bool)
  p_gt = jnp.take_along_axis(probs, labels[:, None], 1)[:, 0]
  p_nn = jnp.max(jnp.where(onehot, -jnp.inf, probs), axis=1)
  return p_gt, p_nn, p_gt == jnp.max(probs, axis=1)


def sample_weights(probs, labels, eps, c):
  """w (B,) of step 4 (see the module docstring); `c` is config.nla."""
  p_gt, p_nn, true = label_and_rival(probs, labels)
  v = jnp.stack([p_gt, p_nn], 1)
  on_true = c.t_lambda * gaussian_density(v, c.true_mean, c.true_std, c.true_ratio, -eps)
  on_false = gaussian_density(v, c.false_mean, c.false_std, c.false_ratio, 1.0)
  return jnp.where(true, on_true, on_false), true


def summed_jsd(logits, mirror_logits):
  """1/2 [KL(m || softmax z) + KL(m || softmax z')], m = softmax((z + z') / 2), each KL summed
  over the batch and the classes. A class whose m underflows to 0 adds 0 (torch's kl_div
  gradient is NaN there)."""
  log_m = jax.nn.log_softmax((logits + mirror_logits) / 2)
  m = jnp.exp(log_m)

  def kl(z):
    return jnp.sum(m * (log_m - jax.nn.log_softmax(z)))

  return 0.5 * (kl(logits) + kl(mirror_logits))


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  c = config.nla
  mirror = batch["image_flip"] if "image_flip" in batch else jnp.flip(batch["image"], axis=2)
  ((logits, _), (mirror_logits, _)), mutated = views.apply_views(
    model, {"params": params, "batch_stats": state.batch_stats}, [batch["image"], mirror])
  logits, mirror_logits = logits.astype(jnp.float32), mirror_logits.astype(jnp.float32)
  labels = batch["label"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  epoch = state.step // state.extra["steps_per_epoch"]
  eps = correlation_ramp(epoch, config.num_epochs, c.ramp_rate)
  w, true = sample_weights(jax.nn.softmax(logits), labels, eps, c)
  jsd = summed_jsd(logits, mirror_logits)
  weighted = jnp.mean(ce * w)
  loss = c.lam * ce.mean() + c.lam * weighted + (1 - c.lam) * jsd
  metrics = {"ce": ce.mean(), "weighted_ce": weighted, "jsd": jsd, "weight_mean": w.mean(),
             "true_branch": true.mean(), "correlation": eps}
  metrics.update(known_flips.weight_by_label(w, batch))
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": metrics, "logits": logits}
