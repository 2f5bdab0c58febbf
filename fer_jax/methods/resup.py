"""ReSup, Reliable label noise Suppression (Zhang et al., IEEE Transactions on Affective
Computing 2025), as its official code trains (FERDenoise 295e37f).
Spec: ../shared/specs/nla_resup.md §2.

Two independent ResNets with their own heads see the same augmented batch. Network 0 (the
parameters `backbone` and `head`, from config.init_from: the MS-Celeb ResNet-18) is the one
evaluated, exported and served; network 1 (`peer_backbone`, `peer_head`, from
config.resup.peer_init_from: ImageNet weights) is trained beside it and dropped from model/.

Per step, with p_k = softmax of network k's logits and e the 0-based epoch:
  e = 0: L = mean(CE_0 + CE_1);
  e >= 1: c_k = cos(p_k, onehot(y)) = p_k[y] / |p_k|, 1 -> 0.999 and 0 -> 0.001; w_k = T_k[int(100
    c_k)] clamped to [1e-4, 1 - 1e-4], no gradient; L = mean(w_1 CE_0 + w_0 CE_1 + 5 *
    mean_c (p_0 - p_1)^2). Each network's CE is weighted by the *other* network's value.

After every epoch (`epoch_outputs` and `after_epoch`, the trainer's end-of-epoch pass): both
networks in eval mode over the training set with the training augmentation give every
sample's two cosines; `clean_posterior` fits each network's two-component Beta mixture on the
host in float64 and rebuilds its 100-entry table T_k (state.extra["posterior_table"][k]).
"""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from fer_jax import cli, schedule
from fer_jax.methods import known_flips
from fer_jax.models import resnet, weights

TABLE_SIZE = 100
COSINE_CLIP = (1e-3, 1 - 1e-3)  # the code's 10e-4 and 1 - 10e-4
WEIGHT_CLIP = (1e-4, 1 - 1e-4)
FIT_ITERATIONS = 10
FIT_CLIP = 1e-4  # the mixture's own clip of its inputs
DENSITY_FLOOR = 1e-12  # the mixture's floor of a weighted density; also the table's grid ends


class PeerNetworks(nn.Module):
  """Two independent classifiers on the same input, each `resnet.Classifier`'s backbone and
  linear head: network 0's as `backbone`/`head` (what model/ keeps), network 1's as
  `peer_backbone`/`peer_head`. Returns network 0's logits and the backbone features, plus
  network 1's logits as features["peer_logits"]."""

  arch: str
  num_classes: int
  width: int = 64
  dtype: str = "float32"

  @nn.compact
  def __call__(self, x, train: bool = False, views: int = 1):
    outputs = []
    for prefix in ("", "peer_"):
      feats = resnet.build_backbone(self.arch, self.width, self.dtype, name=f"{prefix}backbone")(
        x, train, views)
      logits = resnet.TorchDense(self.num_classes, name=f"{prefix}head")(
        feats["pre_logits"])
      outputs.append((logits, feats))
    (logits, feats), (peer_logits, _) = outputs
    return logits, {**feats, "peer_logits": peer_logits}


def build_model(config):
  m = config.model
  return PeerNetworks(m.arch, m.num_classes, m.width, resnet.compute_dtype(config.dtype))


def init_variables(config, variables):
  """Network 1's backbone from config.resup.peer_init_from: a converted checkpoint (the code's
  torchvision ImageNet ResNet-18), "init_from" for config.init_from's, or "" for its random
  init; every backbone variable must be in the checkpoint."""
  source = config.resup.peer_init_from
  source = config.init_from if source == "init_from" else source
  if not source:
    logging.warning("config.resup.peer_init_from is empty: network 1 starts from a random init "
                    "(the official code starts it from ImageNet weights)")
    return variables
  try:
    loaded, meta = weights.load(source)
    peer = {col: {"backbone": tree["peer_backbone"]} for col, tree in variables.items()}
    merged = weights.merge(peer, weights.without_heads(loaded), source=source)
  except (FileNotFoundError, cli.UsageError) as e:
    raise cli.UsageError(f"config.resup.peer_init_from={config.resup.peer_init_from!r}: {e}") from e
  logging.info("Network 1 initialised from %s (%s)", source, meta.get("source", ""))
  return {col: {**tree, "peer_backbone": merged[col]["backbone"]}
          for col, tree in variables.items()}


def init_extra(config, num_train, rng, variables):
  del rng, variables
  return {"steps_per_epoch": jnp.int32(schedule.epoch_steps(config, num_train)),
          "posterior_table": jnp.ones((2, TABLE_SIZE), jnp.float32)}


def label_cosines(logits, labels):
  """cos(softmax(logits), onehot(labels)) = p[y] / |p|, (B,), unclipped."""
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  own = jnp.take_along_axis(probs, labels[:, None], 1)[:, 0]
  return own / jnp.linalg.norm(probs, axis=1)


def clip_cosines(cosines, xp=jnp):
  """The code's clip: a cosine >= 1 becomes 0.999 and one <= 0 becomes 0.001; others stay."""
  low, high = COSINE_CLIP
  return xp.where(cosines >= 1, xp.asarray(high, cosines.dtype),
                  xp.where(cosines <= 0, xp.asarray(low, cosines.dtype), cosines))


def lookup(table, cosines):
  """table[int(100 c)] for the clipped cosines c (float32 product truncated), clamped to
  [1e-4, 1 - 1e-4]."""
  index = (clip_cosines(cosines) * jnp.float32(TABLE_SIZE)).astype(jnp.int32)
  return jnp.clip(table[index], *WEIGHT_CLIP)


def _beta_fit(x, r):
  """(alpha, beta) of a Beta matched to the r-weighted mean and variance of x."""
  mean = np.sum(r * x) / np.sum(r)
  var = np.sum(r * (x - mean) ** 2) / np.sum(r)
  alpha = mean * (mean * (1 - mean) / var - 1)
  return alpha, alpha * (1 - mean) / mean


def clean_posterior(cosines):
  """Fits the code's two-component Beta mixture to one network's training-set cosines.

  Float64 on the host: the cosines clipped in float32 as in a step, then to [1e-4, 1 - 1e-4]; start
  Beta(1, 2) (component 0, noisy) and Beta(2, 1) (component 1, clean), weights 1/2; exactly
  10 EM iterations (responsibilities from the weighted densities floored at 1e-12; each
  component refitted by weighted moments). The table is the clean posterior on 100 points from
  1e-12 to 1 - 1e-12, flattened to its maximum from the argmax on (left of it unchanged).

  Cosines that are all equal make the variance 0 and every value NaN, as in the code.

  Returns:
    {"table": (100,), "alpha": (2,), "beta": (2,), "weight": (2,)}, float64 numpy.
  """
  x = clip_cosines(np.asarray(cosines, np.float32), np).astype(np.float64)  # clipped as a step
  x = np.clip(x, FIT_CLIP, 1 - FIT_CLIP)
  alpha, beta, weight = np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([0.5, 0.5])

  def weighted_densities(points):
    return weight[:, None] * stats.beta.pdf(points[None, :], alpha[:, None], beta[:, None])

  with np.errstate(divide="ignore", invalid="ignore"):
    for _ in range(FIT_ITERATIONS):
      r = np.maximum(weighted_densities(x), DENSITY_FLOOR)
      r = r / r.sum(0)
      for k in range(2):
        alpha[k], beta[k] = _beta_fit(x, r[k])
      weight = r.sum(1) / r.sum()
    grid = np.linspace(DENSITY_FLOOR, 1 - DENSITY_FLOOR, TABLE_SIZE)
    densities = weighted_densities(grid)
    table = densities[1] / (densities.sum(0) + DENSITY_FLOOR)
  if np.all(np.isfinite(table)):
    peak = int(np.argmax(table))
    table[peak:] = table[peak]
  return {"table": table, "alpha": alpha, "beta": beta, "weight": weight}


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  (logits, feats), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
    mutable=["batch_stats"])
  peer_logits = feats["peer_logits"].astype(jnp.float32)
  logits = logits.astype(jnp.float32)
  labels = batch["label"]
  ce = optax.softmax_cross_entropy_with_integer_labels
  ce0, ce1 = ce(logits, labels), ce(peer_logits, labels)
  table = state.extra["posterior_table"]
  w0 = jax.lax.stop_gradient(lookup(table[0], label_cosines(logits, labels)))
  w1 = jax.lax.stop_gradient(lookup(table[1], label_cosines(peer_logits, labels)))
  agreement = jnp.mean((jax.nn.softmax(logits) - jax.nn.softmax(peer_logits)) ** 2, axis=1)
  suppressed = jnp.mean(w1 * ce0 + w0 * ce1 + config.resup.mse_weight * agreement)
  epoch = state.step // state.extra["steps_per_epoch"]
  loss = jnp.where(epoch == 0, jnp.mean(ce0 + ce1), suppressed)
  metrics = {"ce": ce0.mean(), "peer_ce": ce1.mean(), "agreement_mse": agreement.mean(),
             "weight": w1.mean(), "peer_weight": w0.mean(),  # of network 0's CE, 1's
             "peer_accuracy": jnp.mean(jnp.argmax(peer_logits, -1) == labels)}
  metrics.update(known_flips.weight_by_label(w1, batch))
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": metrics, "logits": logits}


def epoch_outputs(state, batch, *, model, config):
  """Per-sample outputs of the end-of-epoch pass: both networks' cosines (B, 2), eval mode."""
  del config
  logits, feats = model.apply(state.variables(), batch["image"], train=False)
  return {"cosines": jnp.stack([label_cosines(logits, batch["label"]),
                                label_cosines(feats["peer_logits"], batch["label"])], 1)}


def after_epoch(extra, outputs, config):
  """The refitted tables from the training set's cosines (`outputs["cosines"]`, (N, 2) in
  index order): {"posterior_table": (2, 100)}; `extra` is the host copy of state.extra. A fit that comes out non-finite (cosines all
  equal) keeps the previous table, where the code would train on NaN."""
  del config
  tables = np.array(extra["posterior_table"], np.float32)
  for k in range(2):
    fit = clean_posterior(outputs["cosines"][:, k].astype(np.float32))
    if np.all(np.isfinite(fit["table"])):
      tables[k] = fit["table"]
      logging.info("network %d: noisy Beta(%.3g, %.3g) weight %.3f, clean Beta(%.3g, %.3g) "
                   "weight %.3f", k, fit["alpha"][0], fit["beta"][0], fit["weight"][0],
                   fit["alpha"][1], fit["beta"][1], fit["weight"][1])
    else:
      logging.warning("network %d's Beta mixture fit is degenerate (its training-set cosines "
                      "are all equal): its weight table is kept from the previous epoch", k)
  return {"posterior_table": tables}
