"""Label-free pretraining from the 19 facial landmarks; no expression label is read.

The embedded synthetic dataset's stand-in for the face-pretrained backbones the papers start
from (MS-Celeb-1M identities, VGGFace2): a face task other than expression recognition, on
other faces (`configs/pretrain_landmarks.py` draws them with another seed). Its exported model
holds only the backbone, for `config.init_from`.

`config.landmarks.targets` picks what the pooled feature regresses:
  "flip_invariant" (default): for each mirror pair of points (brows, eyes, nose alae, mouth
      corners) their horizontal distance and mean height, and the height of each point on the
      midline; all unchanged by a horizontal flip. Identity features are flip-invariant too
      (a face is the same person mirrored), and EAC's flip-consistency term assumes so: from a
      backbone that encodes where things are left and right, the consistency gradient wipes
      the features in its first steps and learning stalls (README "Results").
  "coordinates": the 38 (x, y) coordinates.
Coordinates are in units of the image side. The model has no classifier: its logits are zeros,
so the expression accuracy the trainer logs for it is that of a constant guess.
"""

import jax.numpy as jnp
import numpy as np

from fer_jax.data import synthetic
from fer_jax.models import resnet

NUM_LANDMARKS = synthetic.NUM_LANDMARKS
TARGETS = ("flip_invariant", "coordinates")


def _mirror_pairs():
  perm = synthetic.FLIP_PERMUTATION
  pairs = np.array([(i, j) for i, j in enumerate(perm) if i < j])
  midline = np.array([i for i, j in enumerate(perm) if i == j])
  return pairs, midline


PAIRS, MIDLINE = _mirror_pairs()


def num_targets(kind):
  if kind == "coordinates":
    return 2 * NUM_LANDMARKS
  if kind == "flip_invariant":
    return 2 * len(PAIRS) + len(MIDLINE)
  raise ValueError(f"config.landmarks.targets={kind!r}: expected one of {TARGETS}")


def regression_targets(points, kind):
  """(N, num_targets) from landmarks (N, 19, 2) in units of the image side."""
  if kind == "coordinates":
    return points.reshape(points.shape[0], -1)
  num_targets(kind)  # validates `kind`
  a, b = points[:, PAIRS[:, 0]], points[:, PAIRS[:, 1]]
  return jnp.concatenate([jnp.abs(a[..., 0] - b[..., 0]), (a[..., 1] + b[..., 1]) / 2,
                          points[:, MIDLINE, 1]], axis=1)


def build_model(config):
  m = config.model
  return resnet.Classifier(m.arch, m.num_classes, m.width, config.dtype,
                           extra_heads=(("landmark_head", num_targets(config.landmarks.targets)),),
                           classify=False)


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  images = batch["image"]
  (logits, feats), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, images, train=True,
    mutable=["batch_stats"])
  size = jnp.array(images.shape[2:0:-1], jnp.float32)  # (W, H)
  targets = regression_targets(batch["landmarks"] / size, config.landmarks.targets)
  loss = jnp.mean((feats["landmark_head"].astype(jnp.float32) - targets) ** 2)
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": {"landmark_mse": loss}, "logits": logits}
