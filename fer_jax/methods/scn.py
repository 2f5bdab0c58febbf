"""SCN, Self-Cure Network (Wang et al., CVPR 2020), as its official code trains.
Spec: ../shared/specs/ncct_scn_rul.md §3.

An importance head alpha = sigmoid(Linear(pooled feature)) scales the logits: out = alpha * z.
Per step:
  1. CE(out, y) over the batch, with y the current label (given, or relabelled earlier).
  2. Rank regularisation: sort alpha, H = the top int(beta B) (beta = 0.7), L = the rest;
     L_RR = max(0, margin - (mean alpha_H - mean alpha_L)) with margin 0.15.
  L = CE + L_RR.
  3. From epoch `relabel_epoch` (10, 1-based) on, after the step and from its outputs: when
     max softmax(out) - softmax(out)[y] > 0.2, the sample's stored label becomes the argmax,
     for later epochs.
Where the paper's text reads differently, the code is the default and the text an option:
- `relabel_group`: "all" (code: every sample of the batch) | "low" (text: only the
  low-importance group L).
Since alpha > 0, scaling does not change a prediction: evaluation and the exported model use
the classifier's logits z (the probabilities `predict` reports are softmax(z), not of alpha z).
"""

import jax
import jax.numpy as jnp
import optax

from fer_jax import cli, schedule
from fer_jax.methods import per_sample
from fer_jax.models import resnet


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype,
                           extra_heads=(("importance", 1),))


def init_extra(config, num_train, rng, variables):
  del rng, variables
  return {"steps_per_epoch": jnp.int32(schedule.epoch_steps(config, num_train)),
          # -1: the sample keeps the label it came with.
          "relabelled": jnp.full((num_train,), -1, jnp.int32)}


def rank_regularization(alpha, beta, margin):
  """max(0, margin - (mean of the top int(beta B) importances - mean of the rest))."""
  high = int(beta * alpha.shape[0])
  ranked = jnp.sort(alpha)[::-1]
  return jnp.maximum(0.0, margin - (ranked[:high].mean() - ranked[high:].mean())), high


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  c = config.scn
  if c.relabel_group not in ("all", "low"):
    raise cli.UsageError(f"config.scn.relabel_group={c.relabel_group!r}: expected 'all' or 'low'")
  (logits, feats), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
    mutable=["batch_stats"])
  extra = state.extra
  index = batch["index"]
  stored = extra["relabelled"][index]
  labels = jnp.where(stored >= 0, stored, batch["label"])
  alpha = jax.nn.sigmoid(feats["importance"][:, 0])
  out = alpha[:, None] * logits
  ce = optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()
  rr, high = rank_regularization(alpha, c.beta, c.margin)

  probs = jax.nn.softmax(jax.lax.stop_gradient(out))
  gap = probs.max(1) - jnp.take_along_axis(probs, labels[:, None], 1)[:, 0]
  epoch = state.step // extra["steps_per_epoch"]
  change = (epoch >= c.relabel_epoch - 1) & (gap > c.relabel_margin)
  low = jnp.argsort(jnp.argsort(-jax.lax.stop_gradient(alpha))) >= high  # the group L
  if c.relabel_group == "low":  # the paper's text: only the low-importance group
    change &= low
  relabelled = per_sample.write_rows(extra["relabelled"], index, probs.argmax(1), change)

  metrics = {"ce": ce, "rank_regularization": rr, "importance_mean": alpha.mean(),
             "relabelled_in_batch": change.mean(),
             "relabelled_total": (relabelled >= 0).mean()}
  if "clean_label" in batch:  # known flips: are the relabels right?
    right = probs.argmax(1) == batch["clean_label"]
    metrics["relabel_precision"] = jnp.sum(change & right) / jnp.maximum(change.sum(), 1)
    wrong = batch["clean_label"] != batch["label"]
    metrics["low_group_precision"] = jnp.sum(low & wrong) / jnp.maximum(low.sum(), 1)
  return ce + rr, {"batch_stats": mutated["batch_stats"],
                   "extra": {**extra, "relabelled": relabelled}, "metrics": metrics,
                   "logits": logits}
