"""RUL, Relative Uncertainty Learning (Zhang et al., NeurIPS 2021), as its official code trains.
Spec: ../shared/specs/ncct_scn_rul.md §4.

Two branches on the last feature map (resnet.UncertaintyNeck): mu (the feature the classifier
reads, kept for inference) and log_var. Per step:
  1. s_i = mean_d exp(log_var_i), one uncertainty per sample;
  2. pi = a random permutation of the batch (fixed points allowed), lambda_i = s_i / (s_i +
     s_pi(i)): the more uncertain sample of a pair gets the larger share;
  3. z_i = lambda_i mu_i + (1 - lambda_i) mu_pi(i);
  4. add-up loss L = 0.5 CE(fc(z), y) + 0.5 CE(fc(z), y_pi), batch mean.
The log-variance branch learns only through lambda; there is no uncertainty regulariser (its
final BatchNorm makes the uncertainties relative). Evaluation is fc(mu) in eval mode.
"""

import jax
import jax.numpy as jnp
import optax

from fer_jax.models import resnet


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype, neck="uncertainty")


def mix(mu, log_var, perm):
  """(z, lambda): each sample's feature mixed with its partner's by relative uncertainty."""
  s = jnp.exp(log_var).mean(-1)
  lam = s / (s + s[perm])
  return lam[:, None] * mu + (1 - lam[:, None]) * mu[perm], lam


def loss_fn(params, state, batch, rng, *, model, config):
  perm_rng, dropout_rng = jax.random.split(rng)
  (logits, feats), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
    mutable=["batch_stats"], rngs={"dropout": dropout_rng})
  labels = batch["label"]
  perm = jax.random.permutation(perm_rng, labels.shape[0])
  z, lam = mix(feats["mu"], feats["log_var"], perm)
  mixed = resnet.linear(z, params["head"]["kernel"], params["head"]["bias"])
  ce = optax.softmax_cross_entropy_with_integer_labels
  loss = 0.5 * ce(mixed, labels).mean() + 0.5 * ce(mixed, labels[perm]).mean()
  metrics = {"lambda_spread": jnp.abs(lam - 0.5).mean(),
             "uncertainty_mean": jnp.exp(feats["log_var"]).mean()}
  if "clean_label" in batch:  # known flips: are wrong labels the more uncertain ones?
    wrong = batch["clean_label"] != labels
    s = jnp.exp(feats["log_var"]).mean(-1)
    metrics["uncertainty_ratio_wrong_to_right"] = (
      jnp.sum(s * wrong) / jnp.maximum(wrong.sum(), 1)) / (
      jnp.sum(s * ~wrong) / jnp.maximum((~wrong).sum(), 1))
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": metrics, "logits": logits}
