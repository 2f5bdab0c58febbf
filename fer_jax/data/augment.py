"""Host-side preprocessing ops, composed from a pipeline string.

A pipeline string is `op|op(arg, key=value)|...`, e.g. `resize(224)|flip_lr|random_erasing`.
Every op is a factory registered here; the product maps `(example, rng) -> example`, where
`rng` is the np.random.Generator grain derives from the pipeline seed and the record index,
so augmentation is reproducible and independent of the worker count.

Ops work on uint8 HWC images. Normalisation and the zeroing of erased boxes happen on the
device (`pipeline.to_model_input`): uint8 batches are 4x smaller to move, and torchvision's
RandomErasing writes 0 *after* Normalize, which the host cannot express in uint8. So
`random_erasing` only draws the box, as `<key>_erase = (top, left, height, width)`.

Landmarks, when present, are (x, y) in continuous pixel coordinates (the image spans [0, W]),
and every geometric op moves them with the pixels.
"""

import ast
import math

import numpy as np
from PIL import Image

from fer_jax.data import synthetic

_OPS = {}


def register(fn):
  _OPS[fn.__name__] = fn
  return fn


def parse(spec):
  """Builds `fn(example, rng) -> example` from a pipeline string.

  Raises:
    ValueError: naming the op that is unknown or has malformed arguments.
  """
  ops = []
  for part in filter(None, (p.strip() for p in spec.split("|"))):
    try:
      call = ast.parse(part, mode="eval").body
      if isinstance(call, ast.Name):
        name, args, kwargs = call.id, [], {}
      else:
        name = call.func.id
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError, AttributeError) as e:
      raise ValueError(f"pipeline op {part!r} in {spec!r}: expected name or name(literals)") from e
    if name not in _OPS:
      raise ValueError(f"pipeline op {name!r} in {spec!r}: expected one of {sorted(_OPS)}")
    ops.append(_OPS[name](*args, **kwargs))

  def apply(example, rng):
    for op in ops:
      example = op(example, rng)
    return example

  return apply


@register
def resize(size, key="image"):
  """Bilinear resize to size x size with PIL, as torchvision Resize on a PIL image."""

  def op(ex, rng):
    del rng
    img = ex[key]
    h, w = img.shape[:2]
    if (h, w) != (size, size):
      ex = dict(ex)
      ex[key] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
      if "landmarks" in ex and key == "image":
        ex["landmarks"] = ex["landmarks"] * np.array([size / w, size / h], np.float32)
    return ex

  return op


def _flip(ex, key):
  ex = dict(ex)
  ex[key] = np.ascontiguousarray(ex[key][:, ::-1])
  if "landmarks" in ex and key == "image":
    lm = ex["landmarks"][list(synthetic.FLIP_PERMUTATION)].copy()
    lm[:, 0] = ex[key].shape[1] - lm[:, 0]
    ex["landmarks"] = lm
  return ex


@register
def flip_lr(p=0.5, key="image"):
  """Horizontal flip with probability p (landmarks mirrored and re-ordered left/right)."""

  def op(ex, rng):
    return _flip(ex, key) if rng.random() < p else ex

  return op


@register
def pad_crop(pad=4, key="image"):
  """Zero-pad by `pad` on each side, then crop back at a random offset (torchvision RandomCrop)."""

  def op(ex, rng):
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
