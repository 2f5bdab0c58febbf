"""The PIL/numpy reference of every training augmentation, as the official PyTorch code applies
it: what fer_jax/data/device_ops.py is tested against (tests/test_device_ops.py), op by op on
the same draws. The ops follow torchvision on PIL images and FixMatch's RandAugment pool; each
is `factory(args) -> op(example, rng) -> example` over uint8 HWC images, and `parse` composes
them (and fer_jax's host ops) from a pipeline string.

`random_erasing` only draws the box, as `<key>_erase = (top, left, height, width)`:
torchvision's RandomErasing writes 0 *after* Normalize, which uint8 cannot express, so the
zeroing happens in `pipeline.to_model_input`.
"""

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from fer_jax.data import augment, synthetic

OPS = dict(augment.OPS)
register = functools.partial(augment.register, registry=OPS)
parse = functools.partial(augment.parse, registry=OPS)
resize = augment.resize
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _flip(ex, key, swap_landmarks=True):
  ex = dict(ex)
  ex[key] = np.ascontiguousarray(ex[key][:, ::-1])
  if "landmarks" in ex and key == "image":
    lm = ex["landmarks"]
    lm = (lm[list(synthetic.FLIP_PERMUTATION)] if swap_landmarks else lm).copy()
    lm[:, 0] = ex[key].shape[1] - lm[:, 0]
    ex["landmarks"] = lm
  return ex


@register
def flip_lr(p=0.5, key="image", swap_landmarks=True):
  """Horizontal flip with probability p. Landmarks are mirrored and, with `swap_landmarks`,
  re-ordered so that point 0 stays the image-left brow end; LA-Net's code mirrors them
  without re-ordering (lanet.md §4), `swap_landmarks=False`."""

  def op(ex, rng):
    return _flip(ex, key, swap_landmarks) if rng.random() < p else ex

  return op


@register
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), truncate_landmarks=False,
                        resample="bilinear", key="image"):
  """torchvision's RandomResizedCrop: up to 10 draws of area ~ U(scale) and log-aspect ~
  U(log ratio), else a centre crop of the nearest allowed aspect; PIL crops and resizes the crop
  to size x size, bilinear as torchvision or bicubic (PIL's default) as LA-Net's code. Landmarks
  move with it; `truncate_landmarks` truncates them to integers afterwards, as LA-Net's code
  does."""
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  method = _RESAMPLE[resample]

  def box(h, w, rng):
    for _ in range(10):
      area = h * w * rng.uniform(*scale)
      aspect = math.exp(rng.uniform(*log_ratio))
      cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if 0 < cw <= w and 0 < ch <= h:
        return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    aspect = w / h
    if aspect < ratio[0]:
      cw, ch = w, round(w / ratio[0])
    elif aspect > ratio[1]:
      cw, ch = round(h * ratio[1]), h
    else:
      cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw

  def op(ex, rng):
    img = ex[key]
    top, left, ch, cw = box(*img.shape[:2], rng)
    crop = Image.fromarray(img).crop((left, top, left + cw, top + ch))
    ex = {**ex, key: np.asarray(crop.resize((size, size), method))}
    if "landmarks" in ex and key == "image":
      lm = (ex["landmarks"] - np.array([left, top], np.float32)) * np.array(
        [size / cw, size / ch], np.float32)
      ex["landmarks"] = np.trunc(lm) if truncate_landmarks else lm
    return ex

  return op


@register
def color_jitter(brightness=0.0, contrast=0.0, saturation=0.0, key="image"):
  """torchvision's ColorJitter without hue: each factor ~ U(max(0, 1 - x), 1 + x), applied in a
  random order with PIL's enhancers (as torchvision does on PIL images)."""
  enhancers = [(ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast),
               (ImageEnhance.Color, saturation)]
  enhancers = [(e, x) for e, x in enhancers if x > 0]

  def op(ex, rng):
    im = Image.fromarray(ex[key])
    for i in rng.permutation(len(enhancers)):
      enhancer, x = enhancers[i]
      im = enhancer(im).enhance(rng.uniform(max(0.0, 1 - x), 1 + x))
    return {**ex, key: np.asarray(im)}

  return op


@register
def pad_crop(pad=4, p=1.0, key="image"):
  """With probability p (torchvision's RandomApply: the coin only where p < 1), zero-pad by `pad`
  on each side, then crop back at a random offset (torchvision RandomCrop)."""

  def op(ex, rng):
    if p < 1 and rng.random() >= p:
      return ex
    img = ex[key]
    h, w = img.shape[:2]
    top, left = rng.integers(0, 2 * pad + 1, 2)
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    ex = dict(ex)
    ex[key] = padded[top : top + h, left : left + w]
    if "landmarks" in ex and key == "image":
      ex["landmarks"] = ex["landmarks"] + np.array([pad - left, pad - top], np.float32)
    return ex

  return op


@register
def gaussian_noise(p=0.5, var=30.0, key="image"):
  """With probability p add N(0, var) in uint8 space, clip and truncate (eac.md §2, add_g)."""

  def op(ex, rng):
    if rng.random() >= p:
      return ex
    ex = dict(ex)
    noisy = ex[key].astype(np.float64) + rng.normal(0.0, math.sqrt(var), ex[key].shape)
    ex[key] = np.clip(noisy, 0, 255).astype(np.uint8)
    return ex

  return op


@register
def basic_aug(p=0.5, var=30.0, key="image"):
  """SCN's and RUL's `basic_aug`: with probability p, either a horizontal flip or Gaussian pixel
  noise (var 30 in uint8 space), each half the time."""
  noise = gaussian_noise(p=1.0, var=var, key=key)

  def op(ex, rng):
    if rng.random() >= p:
      return ex
    return _flip(ex, key) if rng.random() < 0.5 else noise(ex, rng)

  return op


@register
def random_erasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), p=0.5, key="image"):
  """Draws torchvision's RandomErasing box; the device zeroes it after normalisation.

  With probability p, up to 10 tries of area ~ U(scale) * H * W and log-aspect ~
  U(log ratio); the first box that fits is kept. No box is (0, 0, 0, 0).
  """
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

  def op(ex, rng):
    h, w = ex[key].shape[:2]
    box = (0, 0, 0, 0)
    if rng.random() < p:
      for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if eh < h and ew < w:
          box = (int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew)
          break
    return {**ex, f"{key}_erase": np.array(box, np.int32)}

  return op


@register
def sample_label():
  """`label` drawn from `soft_label` (FERPlus's probability mode: a new draw every epoch)."""

  def op(ex, rng):
    if "soft_label" not in ex:
      raise ValueError("sample_label needs records with soft_label (FERPlus label_mode "
                       "crossentropy, probability or multi_target)")
    ex = dict(ex)
    probs = ex.pop("soft_label")
    ex["label"] = np.int32(rng.choice(len(probs), p=probs / probs.sum()))
    return ex

  return op


@register
def copy(dst, src="image"):
  """A second view: `dst` starts as a copy of `src` (e.g. NCCTFER's strong view `image_strong`),
  and later ops with `key=dst` change only it."""

  def op(ex, rng):
    del rng
    return {**ex, dst: ex[src]}

  return op


def _affine(ex, key, matrix):
  """Applies `matrix` (2x3, output (x, y) -> input) to `key` with nearest sampling and black
  fill (PIL's defaults, as FixMatch's RandAugment), and moves the landmarks of "image"."""
  img = ex[key]
  h, w = img.shape[:2]
  out = Image.fromarray(img).transform((w, h), Image.Transform.AFFINE, matrix.ravel().tolist(),
                                       resample=Image.Resampling.NEAREST, fillcolor=0)
  ex = {**ex, key: np.asarray(out)}
  if "landmarks" in ex and key == "image":
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    points = ex["landmarks"]
    ex["landmarks"] = (points @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)
  return ex


def _rotate(ex, key, degrees):
  """Counter-clockwise about the centre, as PIL's Image.rotate."""
  h, w = ex[key].shape[:2]
  a = -math.radians(degrees)
  rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
  centre = np.array([w / 2, h / 2])
  return _affine(ex, key, np.hstack([rot, (centre - rot @ centre)[:, None]]))


def _with_pil(ex, key, fn):
  return {**ex, key: np.asarray(fn(Image.fromarray(ex[key])))}


def _enhance(enhancer):
  return lambda ex, k, v, rng: _with_pil(ex, k, lambda im: enhancer(im).enhance(0.09 * v + 0.05))


def _signed(rng, value):
  return -value if rng.random() < 0.5 else value


# FixMatch's RandAugment pool: name -> fn(ex, key, v, rng) with magnitude v in 1..9, mapped to
# each op's range as v * max / 10 + bias (ncct_scn_rul.md §1.2). The enhance ops only reduce
# (factor 0.14..0.86), as in that pool.
_RANDAUG_POOL = {
  "AutoContrast": lambda ex, k, v, rng: _with_pil(ex, k, ImageOps.autocontrast),
  "Equalize": lambda ex, k, v, rng: _with_pil(ex, k, ImageOps.equalize),
  "Identity": lambda ex, k, v, rng: ex,
  "Brightness": _enhance(ImageEnhance.Brightness),
  "Color": _enhance(ImageEnhance.Color),
  "Contrast": _enhance(ImageEnhance.Contrast),
  "Sharpness": _enhance(ImageEnhance.Sharpness),
  "Posterize": lambda ex, k, v, rng: _with_pil(
    ex, k, lambda im: ImageOps.posterize(im, int(0.4 * v) + 4)),
  "Solarize": lambda ex, k, v, rng: _with_pil(
    ex, k, lambda im: ImageOps.solarize(im, 256 - int(25.6 * v))),
  "Rotate": lambda ex, k, v, rng: _rotate(ex, k, _signed(rng, int(3 * v))),
  "ShearX": lambda ex, k, v, rng: _affine(
    ex, k, np.array([[1.0, _signed(rng, 0.03 * v), 0.0], [0.0, 1.0, 0.0]])),
  "ShearY": lambda ex, k, v, rng: _affine(
    ex, k, np.array([[1.0, 0.0, 0.0], [_signed(rng, 0.03 * v), 1.0, 0.0]])),
  "TranslateX": lambda ex, k, v, rng: _affine(ex, k, np.array(
    [[1.0, 0.0, _signed(rng, int(0.03 * v * ex[k].shape[1]))], [0.0, 1.0, 0.0]])),
  "TranslateY": lambda ex, k, v, rng: _affine(ex, k, np.array(
    [[1.0, 0.0, 0.0], [0.0, 1.0, _signed(rng, int(0.03 * v * ex[k].shape[0]))]])),
}


@register
def rand_augment(n=2, p=0.5, key="image"):
  """FixMatch's RandAugment (NCCTFER's strong view): `n` ops drawn with replacement from the
  pool, each applied with probability `p` at a magnitude drawn from 1..9."""
  names = list(_RANDAUG_POOL)

  def op(ex, rng):
    for name in rng.choice(names, n):
      magnitude = int(rng.integers(1, 10))
      if rng.random() < p:
        ex = _RANDAUG_POOL[name](ex, key, magnitude, rng)
    return ex

  return op


@register
def cutout(size=16, fill=127, key="image"):
  """FixMatch's CutoutAbs(v=size): a corner at (max(0, x0 - v / 2), max(0, y0 - v / 2)) truncated,
  x0 ~ U(0, w) and y0 ~ U(0, h); ImageDraw.rectangle to the corner + v (at most the image's
  size), both ends included, filled with grey `fill` (in uint8, before normalisation)."""

  def op(ex, rng):
    img = Image.fromarray(ex[key])
    w, h = img.size
    x0 = int(max(0.0, rng.uniform(0, w) - size / 2.0))
    y0 = int(max(0.0, rng.uniform(0, h) - size / 2.0))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (fill,) * 3)
    return {**ex, key: np.asarray(img)}

  return op
