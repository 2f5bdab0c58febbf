"""LA-Net, landmark-aware learning under label noise (Wu & Cui, ICCV 2023), as its official
code trains. Spec: ../shared/specs/lanet.md; network: fer_jax/models/landmark_aware.py.

Per step, on one augmented view whose landmarks moved with it:
  1. CE of the expression logits z against the given (possibly noisy) label y.
  2. Landmark loss: Adaptive Wing between the predicted heatmaps and Gaussian targets built
     from the landmarks, times the weight map (10 near each point, else 1), averaged.
  3. Label distribution estimation: in-batch K nearest neighbours in u- and v-space weighted
     by the learned pair weights give d = 0.5 (d_u + d_v) (from softmax z of the neighbours);
     the target is t = w H[i] + (1 - w) d with H the per-sample history (w = 0.9), and
     H[i] <- stopgrad(t). H starts as the one-hot given label (here: at a sample's first
     visit, which is the same value). t is NOT detached: the pair weights learn only through
     KL(t || softmax z) (batch-mean).
  4. Expression-landmark contrastive loss: an EMA copy (m = 0.999) of backbone, landmark branch
     and projection heads encodes the same images into keys; pseudo-label = argmax t when
     max t >= delta (0.7), else a unique id per sample; each query (g_u(u), and g_v(v)) has
     as positives the other modality's in-batch keys of its pseudo-label, each in its own
     softmax against the queue entries of other pseudo-labels (temperature 0.1); then the
     batch's keys and pseudo-labels are enqueued (two FIFO queues of 8192).
  L = CE + lam_lm L_lm + lam_kl KL + lam_cl L_el (1, 1, 0.1). No warm-up: all act from step 0.

Differences from the official code, each deliberate:
- An ambiguous sample's id is -(index + 1); the code's -index gives sample 0 the id 0, which
  is the label of class 0.
- The key encoder's BatchNorm uses the statistics of the global batch (jit over all devices);
  the code shuffles the batch across GPUs and normalises each GPU's 64 samples.
- The FPN upsamples to the lateral's size (x2 at 224 px; also defined at odd sizes).
- When a sample occurs twice in a batch (the sampler repeats rare classes) its last
  occurrence updates the history, as the code's indexed assignment does on CPU.
"""

import functools

import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy

from fer_jax import cli
from fer_jax.methods import per_sample
from fer_jax.models import landmark_aware, resnet

HEATMAP_STRIDE = 4  # heatmaps are at the layer-1 resolution, 1/4 of the input


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return landmark_aware.LandmarkAwareNet(m.arch, m.num_classes, m.width, dtype,
                                         config.lanet.num_points, config.lanet.neighbours)


def init_extra(config, num_train, rng, variables):
  """History table, the two key queues with their pseudo-labels, and the key encoder."""
  c = config.lanet
  if c.queue_size % config.batch_size:
    raise cli.UsageError(f"config.lanet.queue_size={c.queue_size} must be a multiple of "
                         f"config.batch_size={config.batch_size} (whole batches are enqueued)")
  params = variables["params"]
  dim = params["projection_v"]["fc2"]["bias"].shape[0]
  queue_u, queue_v = (landmark_aware.normalize(jax.random.normal(k, (c.queue_size, dim)))
                      for k in jax.random.split(rng))
  return {
    "history": jnp.zeros((num_train, config.model.num_classes), jnp.float32),
    "visited": jnp.zeros((num_train,), bool),
    "queue_u": queue_u, "queue_v": queue_v,
    # No pseudo-label is this low, so the initial (random) entries are negatives for every query.
    "queue_labels": jnp.full((c.queue_size,), jnp.iinfo(jnp.int32).min, jnp.int32),
    "queue_ptr": jnp.int32(0),
    # A copy, not the same buffers: the train step donates the state.
    "key_params": jax.tree.map(jnp.copy, {k: params[k] for k in landmark_aware.KEY_ENCODER}),
  }


def adapt_pretrained(variables, loaded):
  """A converted ResNet fills both branches: its layers 2-4 also initialise the landmark
  branch's (lanet.md §1, `load_parameters`)."""
  out = {col: dict(tree) for col, tree in variables.items()}
  for col, tree in out.items():
    backbone = loaded.get(col, {}).get("backbone", {})
    # The branch's layer names are those of the backbone's layers 2-4.
    tree["landmark_branch"] = {k: backbone.get(k, v) for k, v in tree["landmark_branch"].items()}
  return out


def heatmap_targets(points, size):
  """Gaussian heatmaps (N, size, size, P) and weight maps from landmarks (N, P, 2) in input
  pixels, as the official `generate_target`: p = int(x / 4 + 0.5) on the 1/4 grid, a 10x10
  patch exp(-d^2 / (2 1.5^2)) with its centre (index 5) written at rows int(p - 4.5) ..
  int(p + 5.5) (int truncates toward zero), clipped; weight 10 where the 3x3-dilated heatmap
  exceeds 0.2, else 1."""
  grid = jnp.trunc(points / HEATMAP_STRIDE + 0.5)
  first = jnp.trunc(grid - 4.5)  # (N, P, 2): first column / row of the patch
  end = jnp.trunc(grid + 5.5)
  r = jnp.arange(size, dtype=jnp.float32)

  def axis(d):  # (N, P, size): the 1-D Gaussian factor along coordinate d, 0 off the patch
    offset = r - first[..., d : d + 1] - 5
    inside = (r >= first[..., d : d + 1]) & (r < end[..., d : d + 1])
    return jnp.where(inside, jnp.exp(-(offset**2) / (2 * 1.5**2)), 0.0)

  heat = jnp.einsum("npy,npx->nyxp", axis(1), axis(0), precision=resnet.HEAD_PRECISION)
  dilated = jax.lax.reduce_window(heat, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  return heat, jnp.where(dilated > 0.2, 10.0, 1.0)


def adaptive_wing(pred, target, alpha=2.1, omega=14.0, epsilon=1.0, theta=0.5):
  """Elementwise Adaptive Wing loss (Wang et al. 2019) as the official code computes it."""
  diff = jnp.abs(target - pred)
  power = alpha - target
  ratio = theta / epsilon
  a = omega / (1 + ratio**power) * power * ratio ** (power - 1) / epsilon
  c = theta * a - omega * jnp.log1p(ratio**power)
  near = omega * jnp.log1p((diff / epsilon) ** power)
  return jnp.where(diff < theta, near, a * diff - c)


def contrastive(queries, keys, queue, queue_labels, labels, temperature):
  """One direction of the EL loss: mean over queries of the mean over same-label in-batch keys
  of -log(e^{q.k/T} / (e^{q.k/T} + sum over queue entries of other labels e^{q.Q/T}))."""
  similarity = functools.partial(jnp.dot, precision=resnet.HEAD_PRECISION)
  positive = similarity(queries, keys.T) / temperature  # (B, B)
  negative = similarity(queries, queue.T) / temperature  # (B, Q)
  # Queue entries of the query's own label are removed as the code does (-1e10 before /T):
  # finite, so a row with every entry removed gives loss 0, not a NaN gradient.
  negative = negative - 1e10 / temperature * (labels[:, None] == queue_labels[None])
  log_negatives = jax.nn.logsumexp(negative, axis=1, keepdims=True)
  loss = jnp.logaddexp(positive, log_negatives) - positive
  same = (labels[:, None] == labels[None]).astype(jnp.float32)
  return jnp.mean(jnp.sum(loss * same, 1) / same.sum(1))


def enqueue(queue, values, ptr):
  return jax.lax.dynamic_update_slice_in_dim(queue, values.astype(queue.dtype), ptr, 0)


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  c = config.lanet
  if "landmarks" not in batch:
    raise cli.UsageError("LA-Net trains on landmarks, and the training records have none: set "
                         "config.dataset.train_landmarks to a (N, 19, 2) landmark file "
                         "(configs/lanet.py)")
  extra = state.extra
  labels, index = batch["label"], batch["index"]
  (logits, out), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
    mutable=["batch_stats"])
  num_classes = logits.shape[1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  heat, weight = heatmap_targets(batch["landmarks"].astype(jnp.float32),
                                 out["heatmaps"].shape[1])
  landmark_loss = jnp.mean(adaptive_wing(out["heatmaps"], heat) * weight)

  past = jnp.where(extra["visited"][index][:, None], extra["history"][index],
                   jax.nn.one_hot(labels, num_classes))
  target = c.history_momentum * past + (1 - c.history_momentum) * out["lde"]
  log_p = jax.nn.log_softmax(logits)
  kl = jnp.sum(xlogy(target, target) - target * log_p) / logits.shape[0]

  # The key encoder moves towards the current (pre-update) weights, then encodes the batch.
  key_params = jax.tree.map(lambda k, q: c.key_momentum * k + (1 - c.key_momentum) * q,
                            extra["key_params"],
                            {k: jax.lax.stop_gradient(params[k]) for k in extra["key_params"]})
  _, keys = model.apply(
    {"params": {**jax.lax.stop_gradient(params), **key_params},
     "batch_stats": state.batch_stats}, batch["image"], train=True, keys_only=True,
    mutable=["batch_stats"])[0]
  key_u, key_v = jax.lax.stop_gradient(keys["proj_u"]), jax.lax.stop_gradient(keys["proj_v"])
  sure_target = jax.lax.stop_gradient(target)
  confident = sure_target.max(1) >= c.confidence
  pseudo = jnp.where(confident, sure_target.argmax(1), -(index + 1)).astype(jnp.int32)
  contrast = (contrastive(out["proj_u"], key_v, extra["queue_v"], extra["queue_labels"], pseudo,
                          c.temperature)
              + contrastive(out["proj_v"], key_u, extra["queue_u"], extra["queue_labels"],
                            pseudo, c.temperature))

  loss = ce + c.lam_lm * landmark_loss + c.lam_kl * kl + c.lam_cl * contrast

  ptr = extra["queue_ptr"]
  new_extra = {
    "history": per_sample.write_rows(extra["history"], index, sure_target),
    "visited": per_sample.write_rows(extra["visited"], index, jnp.ones_like(index, bool)),
    "queue_u": enqueue(extra["queue_u"], key_u, ptr),
    "queue_v": enqueue(extra["queue_v"], key_v, ptr),
    "queue_labels": enqueue(extra["queue_labels"], pseudo, ptr),
    "queue_ptr": (ptr + labels.shape[0]) % extra["queue_labels"].shape[0],
    "key_params": key_params,
  }
  metrics = {"ce": ce, "landmark_loss": landmark_loss, "kl": kl, "contrastive": contrast,
             "confident": confident.mean(),
             "target_agrees_with_label": jnp.mean(sure_target.argmax(1) == labels)}
  if "clean_label" in batch:  # known flips: does the estimated distribution find the truth?
    wrong = batch["clean_label"] != labels
    fixed = (sure_target.argmax(1) == batch["clean_label"]) & wrong
    metrics["target_corrects_flips"] = fixed.sum() / jnp.maximum(wrong.sum(), 1)
  return loss, {"batch_stats": mutated["batch_stats"], "extra": new_extra, "metrics": metrics,
                "logits": logits}
