"""LA-Net's network (../shared/specs/lanet.md §1-§3): an expression ResNet plus a landmark
branch, projection heads and the label-distribution pair weights.

Parameter tree:
  backbone          the expression path: the shared trunk (stem + layer1) and layers 2-4,
                    exactly `resnet.ResNet`, so that backbone + head is a plain classifier
  head              the expression classifier on u (the pooled layer-4 feature)
  landmark_branch   its own layers 2-4 on the trunk's layer-1 map, an FPN top-down path
                    (1x1 laterals, no BN or activation, bilinear upsampling) and a 1x1 conv to
                    one heatmap per point at the layer-1 resolution; v = its pooled output
  projection_u/_v   Linear-ReLU-Linear heads for the contrastive loss (u -> d_v -> d_v,
                    v -> d_v -> d_v), outputs L2-normalised
  pair_u/_v         LDE's learned pair weights in u- and v-space
Only backbone + head are needed for inference; with `train=False` nothing else runs.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax.models import resnet

# PyTorch's default conv init, kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)): the official
# code leaves its new convs (laterals, heatmap head) at it.
_torch_conv_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _conv1x1(features, name, dtype):
  return nn.Conv(features, (1, 1), use_bias=False, kernel_init=_torch_conv_init, dtype=dtype,
                 name=name)


def _upsample_to(x, like):
  """Bilinear (half-pixel centres, as align_corners=False) to `like`'s spatial size: x2 at
  224 px; also defined for the odd sizes of small inputs, where x2 would not line up."""
  shape = (x.shape[0], like.shape[1], like.shape[2], x.shape[3])
  return jax.image.resize(x, shape, "bilinear").astype(like.dtype)


def normalize(x, eps=1e-12):
  """F.normalize: x / max(||x||, eps) along the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class LandmarkBranch(nn.Module):
  stage_sizes: tuple
  block: Any
  width: int
  num_points: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, stage1, train):
    maps, x = [stage1], stage1
    for i in range(1, len(self.stage_sizes)):
      for j in range(self.stage_sizes[i]):
        x = self.block(self.width * 2**i, 2 if j == 0 else 1, self.dtype,
                       name=f"layer{i + 1}_{j}")(x, train)
      maps.append(x)
    channels = stage1.shape[-1]  # 64 * expansion at full width, as the official laterals
    top = _conv1x1(channels, f"lateral{len(maps)}", self.dtype)(maps[-1])
    for level in range(len(maps) - 1, 0, -1):
      lateral = _conv1x1(channels, f"lateral{level}", self.dtype)(maps[level - 1])
      top = _upsample_to(top, lateral) + lateral
    heatmaps = _conv1x1(self.num_points, "heatmap", self.dtype)(top)
    return heatmaps.astype(jnp.float32), jnp.mean(top.astype(jnp.float32), axis=(1, 2))


class Projection(nn.Module):
  """Linear-ReLU-Linear, L2-normalised; a head, so float32 (resnet.linear)."""

  hidden: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(resnet.TorchDense(self.hidden, name="fc1")(x))
    return normalize(resnet.TorchDense(self.hidden, name="fc2")(x))


class PairWeights(nn.Module):
  """c_ij = softmax(MLP([a_i; b_j]))[0], where (a, b) are the two halves of Linear(x):
  MLP is D -> D/2 -> ReLU -> D/4 -> ReLU -> 2 (lanet.md §2). Returns (B, B)."""

  @nn.compact
  def __call__(self, x):
    n, dim = x.shape
    h = resnet.TorchDense(dim, name="fc_in")(x)
    a, b = h[:, : dim // 2], h[:, dim // 2 :]
    pairs = jnp.concatenate([jnp.broadcast_to(a[:, None], (n, n, a.shape[1])),
                             jnp.broadcast_to(b[None], (n, n, b.shape[1]))], -1)
    y = nn.relu(resnet.TorchDense(dim // 2, name="fc1")(pairs))
    y = nn.relu(resnet.TorchDense(dim // 4, name="fc2")(y))
    return jax.nn.softmax(resnet.TorchDense(2, name="fc3")(y), -1)[..., 0]


def neighbour_mask(features, k):
  """(B, B) 0/1: the k most cosine-similar other samples of each row (no gradient). The
  similarities are float32 at full precision (resnet.HEAD_PRECISION), as the official code's
  (PyTorch's float32 matmul does not use TF32 by default): TF32's 10-bit mantissa would tie
  and reorder near neighbours."""
  f = normalize(jax.lax.stop_gradient(features))
  n = f.shape[0]
  k = min(k, n - 1)
  if k == 0:
    return jnp.zeros((n, n), jnp.float32)
  similarity = jnp.where(jnp.eye(n, dtype=bool), -1.0,
                         jnp.dot(f, f.T, precision=resnet.HEAD_PRECISION))
  _, index = jax.lax.top_k(similarity, k)
  return jax.nn.one_hot(index, n).sum(1)


def aggregate(pair_weights, neighbours, probs):
  """d = w~ @ probs with w = c * N normalised per row as (w + 1e-8/B) / (sum w + 1e-8)."""
  w = pair_weights * neighbours
  eps = 1e-8
  w = (w + eps / w.shape[1]) / (w.sum(-1, keepdims=True) + eps)
  return jnp.dot(w, probs, precision=resnet.HEAD_PRECISION)


class LandmarkAwareNet(nn.Module):
  """Returns `(logits, features)`. In training, features adds `u`, `v`, `heatmaps` (N, H/4,
  W/4, P), `proj_u`, `proj_v` and, unless `keys_only`, `lde`: the in-batch label-distribution
  estimate 0.5 * (d_u + d_v) (N, C), which carries gradient to the pair weights and logits."""

  arch: str
  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32
  num_points: int = 19
  neighbours: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False, keys_only: bool = False):
    feats = resnet.build_backbone(self.arch, self.width, self.dtype, name="backbone")(x, train)
    u = feats["pre_logits"]
    logits = resnet.TorchDense(self.num_classes, name="head")(u)
    if not (train or self.is_initializing()):
      return logits, feats
    spec = resnet.ARCHS[self.arch].keywords
    heatmaps, v = LandmarkBranch(spec["stage_sizes"], spec["block"], self.width,
                                 self.num_points, self.dtype, name="landmark_branch")(
                                   feats["stage1"], train)
    dim = v.shape[-1]
    feats = {**feats, "u": u, "v": v, "heatmaps": heatmaps,
             "proj_u": Projection(dim, name="projection_u")(u),
             "proj_v": Projection(dim, name="projection_v")(v)}
    if keys_only and not self.is_initializing():
      return logits, feats
    probs = jax.nn.softmax(logits)
    d_u = aggregate(PairWeights(name="pair_u")(u), neighbour_mask(u, self.neighbours), probs)
    d_v = aggregate(PairWeights(name="pair_v")(v), neighbour_mask(v, self.neighbours), probs)
    return logits, {**feats, "lde": 0.5 * (d_u + d_v)}


# The parameters the EMA key encoder keeps its own copy of (what computes proj_u and proj_v).
KEY_ENCODER = ("backbone", "landmark_branch", "projection_u", "projection_v")
