"""ResNet-18/-50 in torchvision layout (and EAC's Caffe-style ResNet-50), NHWC, with PyTorch
padding and BatchNorm.

Parameter names mirror torchvision's state_dict so conversion is a rename:
`layer2.0.downsample.1.weight` -> `layer2_0/downsample_1/scale`.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fer_jax import cli


def compute_dtype(name):
  """A config's dtype: "auto" is bfloat16 compute on an accelerator, float32 on the CPU (where
  bfloat16 convolutions are emulated, hence slower); parameters, optimiser state and BatchNorm
  statistics stay float32 in every case."""
  if name == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return name


# torchvision initialises convs with kaiming_normal(mode='fan_out', relu).
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features, kernel, stride, name, dtype):
  pad = kernel // 2  # PyTorch pads symmetrically; Flax 'SAME' would pad (2, 3) on strided 7x7.
  return nn.Conv(
    features,
    (kernel, kernel),
    (stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=False,
    kernel_init=_conv_init,
    dtype=dtype,
    name=name,
  )


class BatchNorm(nn.Module):
  """BatchNorm as torch.nn.BatchNorm2d/1d trains, over a batch that may hold several views.

  Parameters and statistics keep nn.BatchNorm's names (scale, bias; mean, var), so converted
  weights and checkpoints load unchanged. Two differences from nn.BatchNorm, both PyTorch's
  behaviour: the running variance is updated with the *unbiased* batch variance (n / (n - 1)),
  and a batch of `views` interleaved views (row = sample * views + view) is normalised per view
  with that view's own statistics, the running statistics updated once per view in view order,
  exactly as `views` successive forward passes would (at momentum 0.1 and two views:
  rm = 0.81 rm0 + 0.09 mu1 + 0.1 mu2). So a method that runs its views through the network one
  after another can run them as one batched pass with the same results.
  """

  use_running_average: bool
  momentum: float = 0.9  # Flax's convention: running = momentum * running + (1 - momentum) * batch
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  use_scale: bool = True
  use_bias: bool = True
  views: int = 1

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    mean_var = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    var_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (features,)) if self.use_scale else 1.0
    bias = self.param("bias", nn.initializers.zeros, (features,)) if self.use_bias else 0.0
    if self.use_running_average:
      mean, var = mean_var.value, var_var.value
      y = (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
      return y.astype(self.dtype)
    # (samples, views, ..., C): statistics per view over every axis but the view and channel.
    grouped = x.reshape(x.shape[0] // self.views, self.views, *x.shape[1:]).astype(jnp.float32)
    axes = (0, *range(2, grouped.ndim - 1))
    mean = grouped.mean(axes, keepdims=True)
    var = jnp.square(grouped - mean).mean(axes, keepdims=True)
    if not self.is_initializing():
      n = grouped.size // (self.views * features)
      running_mean, running_var = mean_var.value, var_var.value
      for view in range(self.views):
        view_mean = mean.reshape(self.views, features)[view]
        unbiased = var.reshape(self.views, features)[view] * (n / max(n - 1, 1))
        running_mean = self.momentum * running_mean + (1 - self.momentum) * view_mean
        running_var = self.momentum * running_var + (1 - self.momentum) * unbiased
      mean_var.value, var_var.value = running_mean, running_var
    y = (grouped - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias
    return y.reshape(x.shape).astype(self.dtype)


def _norm(train, name, dtype, views=1):
  # PyTorch BN momentum 0.1 updates running = 0.9 * running + 0.1 * batch, i.e. Flax momentum 0.9.
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   views=views, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs; the stride sits on the first."""

  features: int
  stride: int
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train, views=1):
    y = _conv(self.features, 3, self.stride, "conv1", self.dtype)(x)
    y = nn.relu(_norm(train, "bn1", self.dtype, views)(y))
    y = _conv(self.features, 3, 1, "conv2", self.dtype)(y)
    y = _norm(train, "bn2", self.dtype, views)(y)
    return nn.relu(y + _shortcut(self, x, train, views))


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 (x4); torchvision v1.5 puts the stride on the 3x3, the Caffe-style v1
  (`stride_on_1x1`, the VGGFace2 ResNet-50 of EAC) on the first 1x1."""

  features: int
  stride: int
  dtype: Any = jnp.float32
  stride_on_1x1: bool = False
  expansion = 4

  @nn.compact
  def __call__(self, x, train, views=1):
    first, second = (self.stride, 1) if self.stride_on_1x1 else (1, self.stride)
    y = _conv(self.features, 1, first, "conv1", self.dtype)(x)
    y = nn.relu(_norm(train, "bn1", self.dtype, views)(y))
    y = _conv(self.features, 3, second, "conv2", self.dtype)(y)
    y = nn.relu(_norm(train, "bn2", self.dtype, views)(y))
    y = _conv(self.features * 4, 1, 1, "conv3", self.dtype)(y)
    y = _norm(train, "bn3", self.dtype, views)(y)
    return nn.relu(y + _shortcut(self, x, train, views))


def _shortcut(block, x, train, views):
  out = block.features * block.expansion
  if block.stride == 1 and x.shape[-1] == out:
    return x
  y = _conv(out, 1, block.stride, "downsample_0", block.dtype)(x)
  return _norm(train, "downsample_1", block.dtype, views)(y)


class ResNet(nn.Module):
  """ResNet trunk without its classifier.

  Returns a dict of named features: `stage1`..`stage4` (NHWC maps) and `pre_logits` (the
  globally average-pooled `stage4`, shape (N, C)).
  """

  stage_sizes: Sequence[int]
  block: type[nn.Module]
  width: int = 64
  dtype: Any = jnp.float32
  # Caffe's max-pool: no padding, ceil mode (the last window may hang over the bottom/right
  # edge), instead of torchvision's padding 1.
  ceil_pool: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False, views: int = 1):
    x = x.astype(self.dtype)
    x = _conv(self.width, 7, 2, "conv1", self.dtype)(x)
    x = nn.relu(_norm(train, "bn1", self.dtype, views)(x))
    # torchvision's MaxPool2d(3, 2, padding=1) pads with -inf, as reduce_window does here.
    pad = ((0, 1), (0, 1)) if self.ceil_pool else ((1, 1), (1, 1))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=pad)
    feats = {}
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        block = self.block(self.width * 2**i, stride, self.dtype, name=f"layer{i + 1}_{j}")
        x = block(x, train, views)
      feats[f"stage{i + 1}"] = x
    feats["pre_logits"] = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return feats


ARCHS = {
  "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock),
  "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck),
  # EAC's default backbone (eac.md §1): same parameters as resnet50, Caffe stride placement
  # and pooling, loaded from the VGGFace2 `resnet50_ft_weight.pkl`.
  "resnet50_caffe": functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block=functools.partial(Bottleneck, stride_on_1x1=True),
    ceil_pool=True),
}


# Heads are computed in float32 at full precision whatever the compute dtype: bfloat16 (an
# 8-bit mantissa, a step of 0.0625 at |logit| 8-16) or TF32 (the default of float32 matmuls on
# recent GPUs) would round logits and head outputs into exact ties that argmax, top_k and the
# methods' thresholds then break by class index. PyTorch runs Linear layers in full float32
# (torch.backends.cuda.matmul.allow_tf32 is False by default). Heads are tiny beside the backbone.
HEAD_PRECISION = jax.lax.Precision.HIGHEST


def linear(x, kernel, bias):
  """x @ kernel + bias in float32 at HEAD_PRECISION."""
  y = jnp.dot(x.astype(jnp.float32), kernel.astype(jnp.float32), precision=HEAD_PRECISION,
              preferred_element_type=jnp.float32)
  return y + bias.astype(jnp.float32)


class TorchDense(nn.Module):
  """nn.Dense with PyTorch's default initialisation for kernel and bias, computed in float32
  (`linear`): a head, whatever the backbone's compute dtype."""

  features: int

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    bound = 1.0 / fan_in**0.5

    def uniform(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -bound, bound)

    kernel = self.param("kernel", uniform, (fan_in, self.features))
    bias = self.param("bias", uniform, (self.features,))
    return linear(x, kernel, bias)


class UncertaintyNeck(nn.Module):
  """RUL's feature branch on the last map: BatchNorm (no affine, eps 2e-5), dropout 0.4,
  flatten, Linear to `features`, BatchNorm (affine, eps 2e-5). The map is flattened in NHWC
  order (torch flattens NCHW: a converted RUL head would need its columns permuted). A head:
  float32 throughout, whatever the backbone's compute dtype."""

  features: int = 64
  dropout: float = 0.4

  @nn.compact
  def __call__(self, fmap, train, views=1):
    def norm(name, affine):
      return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=2e-5,
                       use_scale=affine, use_bias=affine, dtype=jnp.float32, views=views,
                       name=name)

    x = norm("bn_in", False)(fmap)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = TorchDense(self.features, name="fc")(x.reshape(x.shape[0], -1))
    return norm("bn_out", True)(x)


class Classifier(nn.Module):
  """Backbone + one linear head: the model of the CE baseline and of most methods.

  Returns `(logits, features)` where `features` is the backbone's dict, plus the output of each
  of `extra_heads` ((name, size) pairs: linear maps of the pooled feature that a method trains
  besides the classifier, e.g. NCCTFER's negative classifier) under its name. With
  `classify=False` there is no classifier (pretraining) and the logits are zeros.

  `neck` is what the head reads: "pool" (the global average of the last map) or
  "uncertainty" (RUL: `UncertaintyNeck` named `neck` gives the feature mu; in training a
  second one, `log_var`, gives the features' log-variances, under features["log_var"]).
  The backbone computes in `dtype`; the neck and every head in float32 (`linear`).
  """

  arch: str
  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32
  extra_heads: Sequence[tuple[str, int]] = ()
  classify: bool = True
  neck: str = "pool"

  @nn.compact
  def __call__(self, x, train: bool = False, views: int = 1):
    feats = build_backbone(self.arch, self.width, self.dtype, name="backbone")(x, train, views)
    if self.neck == "uncertainty":
      pooled = UncertaintyNeck(name="neck")(feats["stage4"], train, views)
      feats = {**feats, "mu": pooled}
      if train or self.is_initializing():
        feats["log_var"] = UncertaintyNeck(name="log_var")(feats["stage4"], train, views)
    elif self.neck == "pool":
      pooled = feats["pre_logits"]
    else:
      raise cli.UsageError(f"config.model.neck={self.neck!r}: expected 'pool' or 'uncertainty'")
    feats = {**feats, **{name: TorchDense(size, name=name)(pooled)
                         for name, size in self.extra_heads}}
    if not self.classify:
      return jnp.zeros((x.shape[0], self.num_classes), jnp.float32), feats
    return TorchDense(self.num_classes, name="head")(pooled), feats


def build_backbone(arch, width=64, dtype=jnp.float32, name=None):
  if arch not in ARCHS:
    raise cli.UsageError(f"config.model.arch={arch!r}: expected one of {sorted(ARCHS)}")
  return ARCHS[arch](width=width, dtype=dtype, name=name)
