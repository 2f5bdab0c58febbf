"""Host-side image ops, composed from a pipeline string: what the host does to a record
before batching, and the resize of the inference tools (evaluate, audit, predict).

A pipeline string is `op|op(arg, key=value)|...`, e.g. `resize(224)`. Every op is a factory
registered here; the product maps `(example, rng) -> example` (`rng`: the np.random.Generator
grain derives from the pipeline seed and the record index). Training augmentation runs on the
devices, inside the step (fer_jax/data/device_ops.py), from the same pipeline syntax.

Ops work on uint8 HWC images. Landmarks, when present, are (x, y) in continuous pixel
coordinates (the image spans [0, W]) and move with the pixels.
"""

import ast

import numpy as np
from PIL import Image

from fer_jax import cli

OPS = {}


def register(fn, registry=OPS):
  registry[fn.__name__] = fn
  return fn


def build_ops(spec, registry):
  """The ops of a pipeline string `op|op(arg, key=value)|...`, each built by its factory in
  `registry` (name -> factory); the grammar of both host and device pipelines.

  Raises:
    cli.UsageError: naming the op that is unknown or has malformed arguments.
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
      raise cli.UsageError(f"pipeline op {part!r} in {spec!r}: expected name or "
                           f"name(literals) with name one of {sorted(registry)}") from e
    if name not in registry:
      raise cli.UsageError(f"pipeline op {name!r} in {spec!r}: expected one of {sorted(registry)}")
    try:
      ops.append(registry[name](*args, **kwargs))
    except (TypeError, ValueError) as e:
      raise cli.UsageError(f"pipeline op {part!r} in {spec!r}: {e}") from e
  return ops


def parse(spec, registry=OPS):
  """Builds `fn(example, rng) -> example` from a pipeline string of `registry`'s ops."""
  ops = build_ops(spec, registry)

  def apply(example, rng):
    for op in ops:
      example = op(example, rng)
    return example

  return apply


@register
def fit(height, width, key="image"):
  """Resize to height x width (PIL bilinear) only when the image has another shape: how a split
  of mixed image sizes is batched (fer_jax/data/feed.py); no-op on images of that shape."""

  def op(ex, rng):
    del rng
    h, w = ex[key].shape[:2]
    if (h, w) == (height, width):
      return ex
    ex = dict(ex)
    ex[key] = np.asarray(Image.fromarray(ex[key]).resize((width, height),
                                                         Image.Resampling.BILINEAR))
    if "landmarks" in ex and key == "image":
      ex["landmarks"] = ex["landmarks"] * np.array([width / w, height / h], np.float32)
    return ex

  return op


def fit_spec(shape):
  """The pipeline string of `fit` to (H, W) `shape`."""
  return f"fit({shape[0]}, {shape[1]})"


@register
def resize(size, key="image", resample="bilinear"):
  """Resize to size x size with PIL: bilinear as torchvision Resize on a PIL image, or
  `resample="bicubic"`, PIL's own default (LA-Net's code resizes with it)."""
  method = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[resample]

  def op(ex, rng):
    del rng
    img = ex[key]
    h, w = img.shape[:2]
    if (h, w) != (size, size):
      ex = dict(ex)
      ex[key] = np.asarray(Image.fromarray(img).resize((size, size), method))
      if "landmarks" in ex and key == "image":
        ex["landmarks"] = ex["landmarks"] * np.array([size / w, size / h], np.float32)
    return ex

  return op
