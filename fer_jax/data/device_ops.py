"""The training augmentations, as pure JAX ops for the jitted train step.

`parse(spec)` reads pipeline strings in `augment.parse`'s grammar (`config.input.train_ops`,
with the op names, arguments and defaults of the PIL reference in tests/host_ops.py) and
returns a `Pipeline`: `pipeline(batch, key)` augments a batch of uint8 images
(B, H, W, 3) on the device. Images come out as float32 holding integers in [0, 255], ready for
`pipeline.to_model_input`; every shape is static, so the call can sit inside `jax.jit`.

Row i of a batch draws from `fold_in(key, i)` (its draws do not depend on the batch size), and
op j of the pipeline from `fold_in(that, j)`. Every op is a `draw(key, example) -> params` and an
`apply(example, params) -> example` on one unbatched example, vmapped over the batch, so a test
can feed the same parameters to an apply and to the PIL code of the reference op.

The applies reproduce the reference ops' PIL arithmetic, not just their intent: resampling
uses PIL's filters, float64 coefficients rounded to 22-bit fixed point, and the pass order of
the Pillow releases the official code ran with, 3.3 to 12.1 (`_resample`: the one place where
Pillow 13 differs); enhancers blend in float32 and truncate as Blend.c does; affine warps use
PIL's 16.16 fixed-point nearest sampling; the RandAugment LUTs are ImageOps' integer
arithmetic, including autocontrast's float64 rounding.

Each draw has the distribution of the official code's sampler (torchvision's get_params,
FixMatch's RandAugmentMC and CutoutAbs; tests/torchvision_draws.py): the same fire
probabilities, ranges, up-to-10 tries and fallbacks. A draw takes all its uniforms from one call (integers as
floor(u * n)): one threefry evaluation per op compiles several times faster than one per value.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from fer_jax import cli
from fer_jax.data import augment, synthetic

_OPS = {}


def register(fn):
  _OPS[fn.__name__] = fn
  return fn


class Op(NamedTuple):
  """One pipeline step on a single example: `apply(ex, draw(key, ex))`."""

  name: str
  draw: Callable
  apply: Callable


def _no_draw(key, ex):
  del key, ex
  return ()


def _is_image(name):
  return name.startswith("image") and not name.endswith("_erase")


class Pipeline:
  """Batched, jittable application of parsed ops; see the module docstring."""

  def __init__(self, ops, spec=""):
    self.ops, self.spec = tuple(ops), spec

  def example(self, ex, key):
    """Applies every op to one example of unbatched arrays; op j draws from fold_in(key, j)."""
    ex = {k: v.astype(jnp.float32) if _is_image(k) else v for k, v in ex.items()}
    for j, op in enumerate(self.ops):
      ex = op.apply(ex, op.draw(jax.random.fold_in(key, j), ex))
    return ex

  def __call__(self, batch, key):
    rows = jnp.arange(batch["image"].shape[0])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(rows)
    return jax.vmap(self.example)(dict(batch), keys)

  def output_size(self, height, width):
    """(height, width) of the output `image` for inputs of that size."""
    ex = {"image": jax.ShapeDtypeStruct((height, width, 3), jnp.uint8),
          "label": jax.ShapeDtypeStruct((), jnp.int32),
          "soft_label": jax.ShapeDtypeStruct((2,), jnp.float32)}
    out = jax.eval_shape(self.example, ex, jax.random.key(0))
    return tuple(out["image"].shape[:2])


def parse(spec):
  """Builds a `Pipeline` from a pipeline string in `augment.parse`'s grammar.

  Raises:
    cli.UsageError: naming the op that is unknown or has malformed arguments.
  """
  ops = augment.build_ops(spec, _OPS)
  return Pipeline(ops, spec)


# --- PIL's resampling (Resample.c of Pillow 3.3 to 12.1) ---------------------------------------

_PRECISION_BITS = 22  # PIL's fixed-point coefficients for 8-bit images


def _bilinear(x):
  x = np.abs(x)
  return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x):
  x = np.abs(x)
  a = -0.5  # PIL's bicubic
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
  return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def _check_resample(resample):
  if resample not in _FILTERS:
    raise cli.UsageError(f"resample={resample!r}: expected 'bilinear' or 'bicubic'")


@functools.cache
def _coefficients(length, out_size, resample):
  """PIL's 22-bit integer coefficients for resizing `length` pixels (a crop, or a whole axis)
  to out_size: (first input pixel of each output pixel (out_size,), coefficients
  (out_size, ksize)), ksize = 2 ceil(support) + 1.

  precompute_coeffs and normalize_coeffs_8bpc in float64 with PIL's order of operations: output
  pixel o centres at (o + 0.5) * length / out_size; when downscaling the filter's support is
  widened by length / out_size (antialiasing); the weights are normalised per output pixel and
  rounded half away from zero to k / 2^22.
  """
  kernel, support = _FILTERS[resample]
  scale = length / out_size
  filterscale = max(scale, 1.0)
  support = support * filterscale
  ksize = math.ceil(support) * 2 + 1
  centre = (np.arange(out_size) + 0.5) * scale
  first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int): toward zero
  count = np.minimum((centre + support + 0.5).astype(np.int64), length) - first
  j = np.arange(ksize)[None, :]
  w = np.where(j < count[:, None],
               kernel(((j + first[:, None]) - centre[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
  total = np.zeros(out_size)
  for i in range(ksize):  # PIL sums in this order
    total = total + w[:, i]
  w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
  scaled = w * 2.0**_PRECISION_BITS
  k = np.trunc(np.where(w < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
  return first.astype(np.int32), k


@functools.cache
def _coefficient_table(in_size, out_size, resample):
  """`_coefficients` of every crop length 0..in_size (0: none), zero-padded to one ksize, for a
  crop whose length is traced."""
  rows = [_coefficients(n, out_size, resample) for n in range(1, in_size + 1)]
  ksize = rows[-1][1].shape[1]  # the longest crop has the widest filter
  first = np.zeros((in_size + 1, out_size), np.int32)
  k = np.zeros((in_size + 1, out_size, ksize), np.int32)
  for n, (f, c) in enumerate(rows, 1):
    first[n], k[n, :, : c.shape[1]] = f, c
  return first, k


def _resample_weights(in_size, start, length, out_size, resample):
  """The coefficients of resizing input[start : start + length] (along an axis of in_size
  pixels) to out_size pixels, as a dense (2 * out_size, in_size) float32 matrix: the high and
  then the low part of each, so that pixel * weight products and their sums are exact in
  float32 (see _round_sum). start and length may be traced: the coefficients are then gathered
  from the table of every length."""
  static = isinstance(start, int) and isinstance(length, int)
  if static:
    xp = np
    first, k = _coefficients(length, out_size, resample)
  else:
    xp = jnp
    firsts, ks = _coefficient_table(in_size, out_size, resample)
    first, k = jnp.asarray(firsts)[length], jnp.asarray(ks)[length]
  ksize = k.shape[1]
  j = xp.arange(in_size)[None, :] - start - first[:, None]  # tap of input pixel x
  inside = (j >= 0) & (j < ksize)
  dense = xp.where(inside, xp.take_along_axis(k, xp.clip(j, 0, ksize - 1), axis=1), 0)
  k_hi = (dense + 1024) >> 11
  parts = xp.concatenate([k_hi * 2.0**-11, (dense - (k_hi << 11)) * 2.0**-_PRECISION_BITS])
  return jnp.asarray(parts, jnp.float32)


def _round_sum(s_hi, s_lo):
  """PIL's clip8((sum + 2^21) >> 22) from the two exact float32 partial sums.

  s_hi is on a 2^-11 grid and s_lo on a 2^-22 grid, both small enough to be exact; adding them
  directly would round, so the integer part is taken from s_hi and only the fraction meets s_lo.
  """
  t = s_hi + 0.5
  whole = jnp.floor(t)
  return jnp.clip(whole + jnp.floor((t - whole) + s_lo), 0.0, 255.0)


def _resample_rows(weights, img):
  sums = jnp.tensordot(weights, img, axes=1, precision=lax.Precision.HIGHEST)
  n = weights.shape[0] // 2
  return _round_sum(sums[:n], sums[n:])


def _resample(img, box, size, resample):
  """PIL's resize of the crop img[top : top + ch, left : left + cw] to size x size (crop, then
  resize, as torchvision and LA-Net's code do); box may be traced.

  The horizontal pass first, then the vertical, each rounding to uint8, for every box: the order
  of Pillow 3.3 to 12.1, which the official code ran with. (Pillow 13 runs the vertical pass
  first where the height shrinks much more than the width, e.g. 25x21 -> 24, and 12.2 where the
  image is over 100 times taller than wide; either order moves some pixels by one level.) A pass
  PIL skips, on an axis that keeps its size and offset, is the identity here.
  """
  top, left, ch, cw = box
  h, w = img.shape[:2]
  wx = _resample_weights(w, left, cw, size, resample)
  wy = _resample_weights(h, top, ch, size, resample)
  rows = _resample_rows(wx, img.transpose(1, 0, 2)).transpose(1, 0, 2)
  return _resample_rows(wy, rows)


# --- PIL's enhancers (ImageEnhance, Blend.c, Convert.c, Filter.c) --------------------------------


def _luma(img):
  """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, as int32."""
  rgb = img.astype(jnp.int32)
  return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16


def _black(img):
  return jnp.zeros_like(img)


def _grey(img):
  """ImageEnhance.Color's degenerate: the L image as RGB."""
  return jnp.broadcast_to(_luma(img)[..., None], img.shape).astype(img.dtype)


def _mean_grey(img):
  """ImageEnhance.Contrast's degenerate: int(mean(L) + 0.5) everywhere, in exact integers."""
  luma = _luma(img)
  n = luma.size
  return jnp.full_like(img, (2 * luma.sum() + n) // (2 * n))


def _smooth(img):
  """ImageFilter.SMOOTH (1 1 1 / 1 5 1 / 1 1 1, over 13, rounded); border pixels are copied.
  The sum over 13 is never a half-integer, so integer rounding equals PIL's float32 sum."""
  x = img.astype(jnp.int32)
  h, w = x.shape[:2]
  s = 4 * x[1:-1, 1:-1]
  for dy in range(3):
    for dx in range(3):
      s = s + x[dy : dy + h - 2, dx : dx + w - 2]
  return img.at[1:-1, 1:-1].set(((2 * s + 13) // 26).astype(img.dtype))


# Degenerates by kind: Brightness, Color, Contrast, Sharpness.
_DEGENERATES = (_black, _grey, _mean_grey, _smooth)
_BRIGHTNESS, _COLOR, _CONTRAST, _SHARPNESS = range(4)


def _blend(degenerate, img, factor):
  """Image.blend(degenerate, img, factor): Blend.c's float32 degenerate + factor * diff, the
  product and the sum each rounded, then clipped and truncated to uint8.

  A compiler may fuse that multiply-add into one rounding (an FMA), which moves some results
  across an integer. So the product is formed from the factor's high and low 12 bits: both
  partial products are exact, their sum rounds once, fused or not, and no multiply feeds the
  final add.
  """
  factor = jnp.asarray(factor, jnp.float32)
  high = lax.bitcast_convert_type(lax.bitcast_convert_type(factor, jnp.int32) & ~0xFFF,
                                  jnp.float32)
  diff = img - degenerate
  product = high * diff + (factor - high) * diff
  return jnp.floor(jnp.clip(degenerate + product, 0.0, 255.0))


def _enhance(img, kind, factor):
  """ImageEnhance.<kind>(img).enhance(factor); kind may be traced."""
  return _blend(lax.switch(kind, _DEGENERATES, img), img, factor)


# --- ops ---------------------------------------------------------------------------------------


@register
def resize(size, key="image", resample="bilinear"):
  """PIL's resize to size x size, bilinear or bicubic (see tests/host_ops.py resize)."""
  _check_resample(resample)

  def apply(ex, params):
    del params
    h, w = ex[key].shape[:2]
    if (h, w) == (size, size):
      return ex
    ex = {**ex, key: _resample(ex[key], (0, 0, h, w), size, resample)}
    if "landmarks" in ex and key == "image":
      ex["landmarks"] = ex["landmarks"] * jnp.array([size / w, size / h], jnp.float32)
    return ex

  return Op("resize", _no_draw, apply)


def _flip(ex, key, flip, swap_landmarks=True):
  """Mirrors `key` where `flip` (traced bool), and the landmarks of "image" with it."""
  img = ex[key]
  out = {**ex, key: jnp.where(flip, img[:, ::-1], img)}
  if "landmarks" in ex and key == "image":
    points = ex["landmarks"]
    moved = points[np.array(synthetic.FLIP_PERMUTATION)] if swap_landmarks else points
    moved = moved.at[:, 0].set(img.shape[1] - moved[:, 0])
    out["landmarks"] = jnp.where(flip, moved, points)
  return out


@register
def flip_lr(p=0.5, key="image", swap_landmarks=True):
  """Horizontal flip with probability p (see tests/host_ops.py flip_lr)."""

  def draw(rng, ex):
    del ex
    return jax.random.uniform(rng) < p

  def apply(ex, flip):
    return _flip(ex, key, flip, swap_landmarks)

  return Op("flip_lr", draw, apply)


def _below(u, n):
  """An integer uniform on [0, n) from u ~ U[0, 1); n may be traced."""
  return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


def _between(u, low, high):
  return low + (high - low) * u


def _box_tries(u, h, w, scale, ratio):
  """torchvision's 10 tries of a box from 20 uniforms: area ~ U(scale) * h * w and log-aspect
  ~ U(log ratio); returns the rounded sqrt(area * aspect) and sqrt(area / aspect)."""
  area = h * w * _between(u[:10], *scale)
  aspect = jnp.exp(_between(u[10:20], math.log(ratio[0]), math.log(ratio[1])))
  return (jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32),
          jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32))


def _first_fit(fits, values, fallback):
  """values at the first True of fits (the host keeps the first try that fits), else the
  fallback."""
  first = jnp.argmax(fits)
  return tuple(jnp.where(fits.any(), v[first], f) for v, f in zip(values, fallback))


@register
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), truncate_landmarks=False,
                        resample="bilinear", key="image"):
  """torchvision's RandomResizedCrop: the crop resized with PIL, bilinear as torchvision, or
  bicubic as LA-Net's code (see tests/host_ops.py). Params: (top, left, height, width) of the
  crop, int32."""
  _check_resample(resample)

  def central_box(h, w):
    aspect = w / h
    if aspect < ratio[0]:
      cw, ch = w, round(w / ratio[0])
    elif aspect > ratio[1]:
      cw, ch = round(h * ratio[1]), h
    else:
      cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw

  def draw(rng, ex):
    h, w = ex[key].shape[:2]
    u = jax.random.uniform(rng, (22,))
    widths, heights = _box_tries(u, h, w, scale, ratio)
    fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
    top, left, ch, cw = central_box(h, w)
    ch, cw, fitted = _first_fit(fits, (heights, widths, fits), (ch, cw, False))
    top = jnp.where(fitted, _below(u[20], h - ch + 1), top)
    left = jnp.where(fitted, _below(u[21], w - cw + 1), left)
    return jnp.stack([top, left, ch, cw]).astype(jnp.int32)

  def apply(ex, box):
    top, left, ch, cw = box[0], box[1], box[2], box[3]
    ex = {**ex, key: _resample(ex[key], (top, left, ch, cw), size, resample)}
    if "landmarks" in ex and key == "image":
      points = (ex["landmarks"] - jnp.stack([left, top]).astype(jnp.float32)) * (
        size / jnp.stack([cw, ch]).astype(jnp.float32))
      ex["landmarks"] = jnp.trunc(points) if truncate_landmarks else points
    return ex

  return Op("random_resized_crop", draw, apply)


@register
def color_jitter(brightness=0.0, contrast=0.0, saturation=0.0, key="image"):
  """torchvision's ColorJitter without hue, with PIL's enhancers (tests/host_ops.py).
  Params: `order` (a permutation of the enabled enhancers) and `factor` (one per enhancer, in
  the brightness, contrast, saturation order)."""
  enabled = [(kind, x) for kind, x in ((_BRIGHTNESS, brightness), (_CONTRAST, contrast),
                                       (_COLOR, saturation)) if x > 0]
  kinds = np.array([kind for kind, _ in enabled], np.int32)
  low = np.array([max(0.0, 1 - x) for _, x in enabled], np.float32)
  high = np.array([1 + x for _, x in enabled], np.float32)

  def draw(rng, ex):
    del ex
    if not enabled:
      return {}
    u = jax.random.uniform(rng, (2, len(enabled)))
    # Sorting uniforms gives a uniformly random order.
    return {"order": jnp.argsort(u[0]).astype(jnp.int32), "factor": _between(u[1], low, high)}

  def apply(ex, params):
    img = ex[key]
    for step in range(len(enabled)):
      i = params["order"][step]
      img = _enhance(img, jnp.asarray(kinds)[i], params["factor"][i])
    return {**ex, key: img}

  return Op("color_jitter", draw, apply)


@register
def pad_crop(pad=4, p=1.0, key="image"):
  """With probability p (torchvision's RandomApply), zero-pad by `pad` and crop back at a random
  offset (see tests/host_ops.py pad_crop). Params: (top, left) in the padded image; (pad, pad),
  the image itself, where the op does not fire."""

  def draw(rng, ex):
    del ex
    if p >= 1:
      return _below(jax.random.uniform(rng, (2,)), 2 * pad + 1)
    u = jax.random.uniform(rng, (3,))
    return jnp.where(u[2] < p, _below(u[:2], 2 * pad + 1), pad)

  def apply(ex, offset):
    img = ex[key]
    padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    ex = {**ex, key: lax.dynamic_slice(padded, (offset[0], offset[1], 0), img.shape)}
    if "landmarks" in ex and key == "image":
      ex["landmarks"] = ex["landmarks"] + (pad - offset[::-1]).astype(jnp.float32)
    return ex

  return Op("pad_crop", draw, apply)


def _draw_noise(rng, shape, var, n):
  """n uniforms and N(0, var) noise of the given shape."""
  k_uniform, k_noise = jax.random.split(rng)
  return jax.random.uniform(k_uniform, (n,)), math.sqrt(var) * jax.random.normal(k_noise, shape)


def _add_noise(img, noise):
  """Adds noise in uint8 space, clipped and truncated to uint8, as the host op."""
  return jnp.floor(jnp.clip(img + noise, 0.0, 255.0))


@register
def gaussian_noise(p=0.5, var=30.0, key="image"):
  """With probability p, N(0, var) pixel noise (tests/host_ops.py). Params: `fire`
  and `noise` (the image's shape, float32)."""

  def draw(rng, ex):
    u, noise = _draw_noise(rng, ex[key].shape, var, 1)
    return {"fire": u[0] < p, "noise": noise}

  def apply(ex, params):
    img = ex[key]
    return {**ex, key: jnp.where(params["fire"], _add_noise(img, params["noise"]), img)}

  return Op("gaussian_noise", draw, apply)


@register
def basic_aug(p=0.5, var=30.0, key="image"):
  """With probability p a flip or pixel noise, each half the time (see tests/host_ops.py basic_aug).
  Params: `fire`, `flip` (else noise) and `noise`."""

  def draw(rng, ex):
    u, noise = _draw_noise(rng, ex[key].shape, var, 2)
    return {"fire": u[0] < p, "flip": u[1] < 0.5, "noise": noise}

  def apply(ex, params):
    fire = params["fire"]
    out = _flip(ex, key, fire & params["flip"])
    noisy = fire & ~params["flip"]
    return {**out, key: jnp.where(noisy, _add_noise(out[key], params["noise"]), out[key])}

  return Op("basic_aug", draw, apply)


@register
def random_erasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), p=0.5, key="image"):
  """torchvision's RandomErasing box as `<key>_erase` = (top, left, height, width), (0, 0, 0, 0)
  when it does not fire (see tests/host_ops.py random_erasing); the params are that box."""

  def draw(rng, ex):
    h, w = ex[key].shape[:2]
    u = jax.random.uniform(rng, (23,))
    eh, ew = _box_tries(u, h, w, scale, ratio)
    fits = (eh < h) & (ew < w)
    eh, ew, fitted = _first_fit(fits, (eh, ew, fits), (0, 0, False))
    box = jnp.stack([_below(u[20], h - eh + 1), _below(u[21], w - ew + 1), eh, ew])
    return jnp.where(fitted & (u[22] < p), box, 0).astype(jnp.int32)

  def apply(ex, box):
    return {**ex, f"{key}_erase": box}

  return Op("random_erasing", draw, apply)


@register
def sample_label():
  """`label` drawn from `soft_label`, which is dropped (tests/host_ops.py). Params: the
  uniform that numpy's Generator.choice compares with the normalised cumulative sum."""

  def draw(rng, ex):
    del ex
    return jax.random.uniform(rng)

  def apply(ex, u):
    if "soft_label" not in ex:
      raise cli.UsageError("sample_label needs records with soft_label (FERPlus label_mode "
                           "crossentropy, probability or multi_target)")
    ex = dict(ex)
    probs = ex.pop("soft_label")
    cdf = jnp.cumsum(probs / probs.sum())
    label = jnp.searchsorted(cdf / cdf[-1], u, side="right")
    ex["label"] = jnp.minimum(label, probs.shape[0] - 1).astype(jnp.int32)
    return ex

  return Op("sample_label", draw, apply)


@register
def copy(dst, src="image"):
  """A second view: `dst` starts as a copy of `src` (see tests/host_ops.py copy)."""

  def apply(ex, params):
    del params
    return {**ex, dst: ex[src]}

  return Op("copy", _no_draw, apply)


# --- RandAugment (FixMatch's pool, as tests/host_ops.py applies it) -------------------------

POOL = ("AutoContrast", "Equalize", "Identity", "Brightness", "Color", "Contrast", "Sharpness",
        "Posterize", "Solarize", "Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_IDENTITY = POOL.index("Identity")
_LUT, _ENHANCE, _AFFINE = range(3)
_FAMILY = np.array([_LUT, _LUT, _LUT, _ENHANCE, _ENHANCE, _ENHANCE, _ENHANCE, _LUT, _LUT]
                   + [_AFFINE] * 5, np.int32)
_LUT_SLOT = np.array([0, 1, 2, 2, 2, 2, 2, 3, 4, 2, 2, 2, 2, 2], np.int32)
_ENHANCE_KIND = np.array([0, 0, 0, _BRIGHTNESS, _COLOR, _CONTRAST, _SHARPNESS] + [0] * 7,
                         np.int32)
# Magnitude v in 0..9 -> each op's argument, with the host's Python arithmetic.
_ENHANCE_FACTOR = np.array([0.09 * v + 0.05 for v in range(10)], np.float32)
_POSTERIZE_BITS = np.array([int(0.4 * v) + 4 for v in range(10)], np.int32)
_SOLARIZE_THRESHOLD = np.array([256 - int(25.6 * v) for v in range(10)], np.int32)


@functools.cache
def _autocontrast_fixups():
  """lo * 65536 + hi * 256 + ix where ImageOps.autocontrast's float64 LUT entry
  int(ix * scale + offset) is one below the exact floor(255 (ix - lo) / (hi - lo)): when the
  exact value is an integer, the rounded scale and offset can land just under it."""
  ix = np.arange(256)
  codes = []
  for lo in range(255):
    hi = np.arange(lo + 1, 256)[:, None]
    scale = 255.0 / (hi - lo)
    pil = np.clip(np.trunc(ix * scale + (-lo * scale)), 0, 255)
    exact = np.clip((255 * (ix - lo)) // (hi - lo), 0, 255)
    assert ((exact - pil) >= 0).all() and ((exact - pil) <= 1).all()
    rows, cols = np.nonzero(exact != pil)
    codes.append(lo * 65536 + hi[rows, 0] * 256 + ix[cols])
  return np.concatenate(codes).astype(np.int32)


def _autocontrast_lut(hist):
  """ImageOps.autocontrast's per-channel LUT from (256, C) histograms."""
  ix = jnp.arange(256)[:, None]
  present = hist > 0
  lo = jnp.argmax(present, axis=0)
  hi = 255 - jnp.argmax(present[::-1], axis=0)
  lut = jnp.clip((255 * (ix - lo)) // jnp.maximum(hi - lo, 1), 0, 255)
  codes = jnp.asarray(_autocontrast_fixups())
  hit = (codes[:, None] >> 8) == (lo * 256 + hi)[None, :]
  lut = lut - jnp.zeros_like(lut).at[codes & 255].add(hit.astype(lut.dtype))
  return jnp.where(hi > lo, lut, ix)


def _equalize_lut(hist):
  """ImageOps.equalize's per-channel LUT (entries above 255 clip, as Image.point does)."""
  ix = jnp.arange(256)[:, None]
  present = hist > 0
  top = 255 - jnp.argmax(present[::-1], axis=0)
  step = (hist.sum(axis=0) - jnp.take_along_axis(hist, top[None], axis=0)[0]) // 255
  before = jnp.cumsum(hist, axis=0) - hist
  lut = jnp.minimum((step // 2 + before) // jnp.maximum(step, 1), 255)
  return jnp.where((present.sum(axis=0) <= 1) | (step == 0), ix, lut)


def _apply_lut(img, lut):
  """img (H, W, C) through per-channel lut (256, C)."""
  pixels = img.astype(jnp.int32).reshape(-1, img.shape[-1])
  return jnp.take_along_axis(lut, pixels, axis=0).reshape(img.shape).astype(img.dtype)


def _pool_lut(img, op, magnitude):
  """The LUT of AutoContrast, Equalize, Identity, Posterize or Solarize (others: identity)."""
  pixels = img.astype(jnp.int32).reshape(-1, img.shape[-1])
  hist = jax.vmap(lambda c: jnp.bincount(c, length=256), in_axes=1, out_axes=1)(pixels)
  ix = jnp.broadcast_to(jnp.arange(256)[:, None], hist.shape)
  shift = 8 - jnp.asarray(_POSTERIZE_BITS)[magnitude]
  threshold = jnp.asarray(_SOLARIZE_THRESHOLD)[magnitude]
  luts = jnp.stack([_autocontrast_lut(hist), _equalize_lut(hist), ix, (ix >> shift) << shift,
                    jnp.where(ix < threshold, ix, 255 - ix)])
  return luts[jnp.asarray(_LUT_SLOT)[op]]


def _affine_matrices(h, w):
  """(5, 10, 2, 2, 3) float64 output -> input matrices of Rotate, ShearX, ShearY, TranslateX,
  TranslateY by magnitude and negated sign, built as augment builds them."""
  out = np.zeros((5, 10, 2, 2, 3))
  for v in range(10):
    for negate in (0, 1):
      sign = -1 if negate else 1
      a = -math.radians(sign * int(3 * v))
      rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
      centre = np.array([w / 2, h / 2])
      shear = -0.03 * v if negate else 0.03 * v
      tx, ty = int(0.03 * v * w), int(0.03 * v * h)
      out[:, v, negate] = [
        np.hstack([rot, (centre - rot @ centre)[:, None]]),
        [[1.0, shear, 0.0], [0.0, 1.0, 0.0]],
        [[1.0, 0.0, 0.0], [shear, 1.0, 0.0]],
        [[1.0, 0.0, -tx if negate else tx], [0.0, 1.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 1.0, -ty if negate else ty]],
      ]
  return out


@functools.cache
def _affine_tables(h, w):
  """PIL's 16.16 fixed-point coefficients (Geometry.c affine_fixed: FIX(v) = floor(v * 2^16 +
  0.5), offsets to the pixel centre folded into a2 and a5) and the float32 inverse matrices
  that move landmarks, for every affine op, magnitude and sign."""
  m = _affine_matrices(h, w)

  def fix(v):
    return np.floor(v * 65536.0 + 0.5)

  a = [m[..., i // 3, i % 3] for i in range(6)]
  coeffs = np.stack([fix(a[0]), fix(a[1]), fix(a[2] + a[0] * 0.5 + a[1] * 0.5),
                     fix(a[3]), fix(a[4]), fix(a[5] + a[3] * 0.5 + a[4] * 0.5)], axis=-1)
  full = np.concatenate([m, np.broadcast_to([0.0, 0.0, 1.0], m.shape[:3] + (1, 3))], axis=-2)
  inverse = np.linalg.inv(full)[..., :2, :]
  return coeffs.astype(np.int32), inverse.astype(np.float32)


def _warp_nearest(img, coeffs):
  """PIL's NEAREST affine transform with black fill from 16.16 fixed-point coefficients: output
  pixel (x, y) reads input (a2 + x a0 + y a1) >> 16, (a5 + x a3 + y a4) >> 16."""
  h, w = img.shape[:2]
  y = jnp.arange(h)[:, None]
  x = jnp.arange(w)[None, :]
  xin = (coeffs[2] + x * coeffs[0] + y * coeffs[1]) >> 16
  yin = (coeffs[5] + x * coeffs[3] + y * coeffs[4]) >> 16
  inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
  pixels = img[jnp.clip(yin, 0, h - 1), jnp.clip(xin, 0, w - 1)]
  return jnp.where(inside[..., None], pixels, 0)


def _pool_affine(img, points, op, magnitude, negate):
  coeffs, inverse = _affine_tables(*img.shape[:2])
  slot = (jnp.clip(op - POOL.index("Rotate"), 0, 4), magnitude, jnp.asarray(negate, jnp.int32))
  img = _warp_nearest(img, jnp.asarray(coeffs)[slot])
  if points is not None:
    inv = jnp.asarray(inverse)[slot]
    # Elementwise rather than a matmul, which may run at reduced precision on accelerators.
    x, y = points[:, 0], points[:, 1]
    points = jnp.stack([inv[0, 0] * x + inv[0, 1] * y + inv[0, 2],
                        inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]], axis=-1)
  return img, points


def pool_op(img, points, op, magnitude, negate):
  """Applies POOL[op] at magnitude (1..9) to img (H, W, 3) and, for geometric ops, to points
  (P, 2) or None; `negate` is the host's `_signed` draw. All arguments may be traced."""
  branches = (
    lambda: (_apply_lut(img, _pool_lut(img, op, magnitude)), points),
    lambda: (_enhance(img, jnp.asarray(_ENHANCE_KIND)[op],
                      jnp.asarray(_ENHANCE_FACTOR)[magnitude]), points),
    lambda: _pool_affine(img, points, op, magnitude, negate),
  )
  return lax.switch(jnp.asarray(_FAMILY)[op], branches)


@register
def rand_augment(n=2, p=0.5, key="image"):
  """FixMatch's RandAugment (see tests/host_ops.py rand_augment). Params: per step `op` (index into
  POOL), `magnitude` (1..9), `fire` (probability p) and `negate` (the sign of signed ops)."""

  def draw(rng, ex):
    del ex
    u = jax.random.uniform(rng, (4, n))
    return {"op": _below(u[0], len(POOL)), "magnitude": 1 + _below(u[1], 9), "fire": u[2] < p,
            "negate": u[3] < 0.5}

  def apply(ex, params):
    img = ex[key]
    points = ex["landmarks"] if "landmarks" in ex and key == "image" else None
    for i in range(n):
      op = jnp.where(params["fire"][i], params["op"][i], _IDENTITY)
      img, points = pool_op(img, points, op, params["magnitude"][i], params["negate"][i])
    ex = {**ex, key: img}
    if points is not None:
      ex["landmarks"] = points
    return ex

  return Op("rand_augment", draw, apply)


@register
def cutout(size=16, fill=127, key="image"):
  """FixMatch's CutoutAbs(v=size) (see tests/host_ops.py cutout): ImageDraw.rectangle from the
  corner to the corner + size, both ends included, so a (size + 1) x (size + 1) box clipped to
  the image. Params: the box's (top, left)."""

  def draw(rng, ex):
    h, w = ex[key].shape[:2]
    u = jax.random.uniform(rng, (2,))
    left = jnp.floor(jnp.maximum(0.0, u[0] * w - size / 2))
    top = jnp.floor(jnp.maximum(0.0, u[1] * h - size / 2))
    return jnp.stack([top, left]).astype(jnp.int32)

  def apply(ex, corner):
    img = ex[key]
    rows = jnp.arange(img.shape[0])[:, None]
    cols = jnp.arange(img.shape[1])[None, :]
    inside = ((rows >= corner[0]) & (rows <= corner[0] + size) & (cols >= corner[1])
              & (cols <= corner[1] + size))
    return {**ex, key: jnp.where(inside[..., None], jnp.asarray(fill, img.dtype), img)}

  return Op("cutout", draw, apply)
