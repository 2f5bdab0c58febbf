"""NCCTFER (Gera et al., 2023): positive and negative classifiers with consistency, as the
official code trains them. Spec: ../shared/specs/ncct_scn_rul.md §0-§1.

One backbone, two linear heads on its pooled feature: the positive classifier `head` (the
only one used for evaluation and export) and the negative classifier `negative_head`. Each
step runs the weak view (`image`: resize, pad-4 crop, flip) and the strong view
(`image_strong`: the same plus RandAugment and a 16 px cutout) as two forward passes, the
BatchNorm running statistics threaded from the first into the second; here as one batched
pass with the same semantics (`views.apply_views`).

- Warm-up epochs (`warmup_epochs`): 0.5 * (mean CE(weak) + mean CE(strong)) on the positive head.
- Then, per view, class thresholds from the batch: T_c = mean over all samples of
  clamp(p_c, 0.35, 0.65); a sample is confident when its clamped probability of its label is at
  least its label's threshold. CE is summed over each view's confident samples (mean CE over
  the batch if none is confident) and the two views averaged.
- Consistency on the weak view's non-confident samples N: with P = softmax of the negative head
  on the weak view and M the k least probable classes of P, L_c = -(1/|N|) sum_N sum_c
  M P log softmax(negative head, strong view). P carries gradient; the strong view's negative
  logits do not (the code's `copy.copy`). L = L_p + L_c.

Where the paper's text reads differently, the code's behaviour is the default (it made the
published numbers) and the text's is an option:
- `threshold`: "clamped_batch_mean" (code) | "class_mean" (text: mean of p_c over the samples
  labelled c, no clamp) | "batch_mean" (DNFER: mean over all samples, no clamp).
- `mask`: "k_smallest" (the code's: the k least probable classes) | "k_largest" (ablation).
- `mask_ties`: "exactly_k" (default: exactly k classes, ties broken by class index) |
  "official" (the code's cut: its unsorted top-k's last value is the k-th smallest on the
  backends checked, and the mask keeps every class with P <= that value, so exactly k classes
  with distinct probabilities and more than k where probabilities tie exactly).
- `target_gradient`: "weak" (code: through P only) | "both" (text: also through the strong
  view) | "strong" (FixMatch reading: P detached, the strong view trained).
- `ce_reduction`: "sum" (code) | "mean".
- `negative`: "consistency" (the method) | "none" (ablation: positive classifier with the
  threshold only, DNFER-style) | "nlnl" (ablation: NLNL negative learning on N, -log(1 - p_c)
  of the negative head for a random complementary class c; our reading of the ablation).
Also logged each step: per-class thresholds of the weak view, the confident fractions, and,
when the run knows which labels were flipped, the precision and recall of "non-confident" as
a detector of wrong labels.
"""

import jax
import jax.numpy as jnp
import optax

from fer_jax import cli, schedule
from fer_jax.methods import views
from fer_jax.models import resnet


def build_model(config):
  """Backbone, the positive classifier `head` and the negative classifier `negative_head`."""
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype,
                           extra_heads=(("negative_head", m.num_classes),))


def init_extra(config, num_train, rng, variables):
  del rng, variables
  return {"steps_per_epoch": jnp.int32(schedule.epoch_steps(config, num_train))}


def class_thresholds(probs, labels, mode, clamp=(0.35, 0.65)):
  """(C,) per-class thresholds of a batch, and the probabilities they are compared with."""
  if mode == "clamped_batch_mean":
    # Averaged as an offset above the lower clamp, so that a class nobody reaches 0.35 for has
    # a threshold of exactly 0.35 and its samples (all at 0.35) are confident, as in the official
    # code. The plain float32 mean of 64 copies of 0.35 rounds *above* 0.35 in XLA (below it in
    # torch): every sample of such a class became non-confident, lost its CE, and the class
    # was never predicted again.
    low = jnp.float32(clamp[0])
    offsets = jnp.clip(probs, *clamp) - low
    return low + offsets.mean(0), low + offsets
  if mode == "batch_mean":
    return probs.mean(0), probs
  if mode == "class_mean":
    onehot = jax.nn.one_hot(labels, probs.shape[1])
    return (probs * onehot).sum(0) / jnp.maximum(onehot.sum(0), 1), probs
  raise cli.UsageError(f"config.ncct.threshold={mode!r}: expected clamped_batch_mean, batch_mean "
                       "or class_mean")


def confident(probs, labels, mode):
  """Boolean (B,) confident mask and the (C,) thresholds."""
  thresholds, compared = class_thresholds(probs, labels, mode)
  own = jnp.take_along_axis(compared, labels[:, None], 1)[:, 0]
  return own >= thresholds[labels], thresholds


def least_probable_mask(probs, k, largest=False, ties="exactly_k"):
  """(B, C) 0/1 mask of the k least (or most) probable classes of each row: exactly k, or with
  ties="official" every class at or beyond the k-th value (more than k on exact ties)."""
  signed = probs if largest else -probs
  values, index = jax.lax.top_k(signed, k)
  if ties == "official":
    return (signed >= values[:, -1:]).astype(probs.dtype)
  if ties != "exactly_k":
    raise cli.UsageError(f"config.ncct.mask_ties={ties!r}: expected exactly_k or official")
  return jax.nn.one_hot(index, probs.shape[1]).sum(1)


def masked_consistency(weak_negative, strong_negative, selected, k, mask_mode, gradient,
                       ties="exactly_k"):
  """L_c: mean over the `selected` samples of -sum_c M P log q (see the module docstring)."""
  p = jax.nn.softmax(weak_negative)
  log_q = jax.nn.log_softmax(strong_negative)
  if gradient == "weak":
    log_q = jax.lax.stop_gradient(log_q)
  elif gradient == "strong":
    p = jax.lax.stop_gradient(p)
  elif gradient != "both":
    raise cli.UsageError(f"config.ncct.target_gradient={gradient!r}: expected weak, both or strong")
  if mask_mode not in ("k_smallest", "k_largest"):
    raise cli.UsageError(f"config.ncct.mask={mask_mode!r}: expected k_smallest or k_largest")
  mask = least_probable_mask(jax.lax.stop_gradient(p), k, largest=mask_mode == "k_largest",
                             ties=ties)
  per_sample = -(mask * p * log_q).sum(1)
  return jnp.sum(per_sample * selected) / jnp.maximum(selected.sum(), 1)


def _confident_ce(logits, labels, selected, reduction):
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  chosen = ce * selected
  picked = chosen.sum() if reduction == "sum" else chosen.sum() / jnp.maximum(selected.sum(), 1)
  return jnp.where(selected.any(), picked, ce.mean())


def loss_fn(params, state, batch, rng, *, model, config):
  c = config.ncct
  labels = batch["label"]
  ((weak, weak_feats), (strong, strong_feats)), mutated = views.apply_views(
    model, {"params": params, "batch_stats": state.batch_stats},
    [batch["image"], batch["image_strong"]])
  ce_weak = optax.softmax_cross_entropy_with_integer_labels(weak, labels)
  ce_strong = optax.softmax_cross_entropy_with_integer_labels(strong, labels)
  warmup_loss = 0.5 * (ce_weak.mean() + ce_strong.mean())

  sure_weak, thresholds = confident(jax.nn.softmax(weak), labels, c.threshold)
  sure_strong, _ = confident(jax.nn.softmax(strong), labels, c.threshold)
  positive = 0.5 * (_confident_ce(weak, labels, sure_weak, c.ce_reduction)
                    + _confident_ce(strong, labels, sure_strong, c.ce_reduction))
  unsure = ~sure_weak
  if c.negative == "consistency":
    negative = masked_consistency(weak_feats["negative_head"],
                                  strong_feats["negative_head"], unsure, c.k, c.mask,
                                  c.target_gradient, c.mask_ties)
  elif c.negative == "nlnl":
    num_classes = weak.shape[1]
    other = (labels + jax.random.randint(rng, labels.shape, 1, num_classes)) % num_classes
    p_other = jnp.take_along_axis(jax.nn.softmax(weak_feats["negative_head"]),
                                  other[:, None], 1)[:, 0]
    negative = -jnp.sum(jnp.log(jnp.clip(1 - p_other, 1e-7)) * unsure) / jnp.maximum(
      unsure.sum(), 1)
  elif c.negative == "none":
    negative = jnp.float32(0.0)
  else:
    raise cli.UsageError(f"config.ncct.negative={c.negative!r}: expected consistency, nlnl or none")

  epoch = state.step // state.extra["steps_per_epoch"]
  warm = epoch < c.warmup_epochs
  loss = jnp.where(warm, warmup_loss, positive + negative)
  metrics = {"ce_weak": ce_weak.mean(), "ce_strong": ce_strong.mean(),
             "positive_loss": positive, "negative_loss": negative,
             "confident_weak": sure_weak.mean(), "confident_strong": sure_strong.mean(),
             "warmup": warm.astype(jnp.float32)}
  metrics.update({f"threshold_{i}": t for i, t in enumerate(thresholds)})
  if "clean_label" in batch:  # known flips: how well "non-confident" finds wrong labels
    wrong = batch["clean_label"] != labels
    found = jnp.sum(unsure & wrong)
    metrics["detect_precision"] = found / jnp.maximum(unsure.sum(), 1)
    metrics["detect_recall"] = found / jnp.maximum(wrong.sum(), 1)
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": metrics, "logits": weak}
