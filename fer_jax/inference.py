"""Running a model directory: loading it, reading face images, class probabilities.

A model directory is `<workdir>/model` after training or a `python -m fer_jax.convert` output
(fer_jax/models/weights.py); a training workdir stands for its `model/`. Images go through
the model's recorded eval transform: RGB, bilinear resize to its image size, normalisation
with its mean/std (inside `probability_fn`).

  model, variables, meta = inference.load_model("runs/baseline")
  probs = inference.predict(model, variables, meta, inference.list_images(["faces/"]))
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fer_jax import cli
from fer_jax.data import pipeline
from fer_jax.models import resnet, weights

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_META_FIELDS = ("arch", "num_classes", "width", "class_names", "image_size", "mean", "std")


def load_model(directory):
  """Returns (model, variables, meta) for a model directory or a training workdir.

  Raises:
    FileNotFoundError: naming a missing model file.
    cli.UsageError: naming the file that is unreadable, lacks a field, or lacks (or mis-shapes)
      a tensor of the model its model.json describes; or for a model without a classifier.
  """
  directory = pathlib.Path(directory)
  if not (directory / weights.META).exists() and (directory / "model" / weights.META).exists():
    directory = directory / "model"
  meta = weights.read_meta(directory)
  missing = [k for k in _META_FIELDS if k not in meta]
  if missing:
    raise cli.UsageError(f"{directory / weights.META}: no {', '.join(missing)}; expected the "
                         "model.json of training or `python -m fer_jax.convert`")
  if not meta.get("has_head", True):
    raise cli.UsageError(f"{directory}: this model has no classifier head (a converted backbone); "
                         "train it first (config.init_from) to predict expressions")
  model = resnet.Classifier(meta["arch"], meta["num_classes"], meta["width"],
                            neck=meta.get("neck", "pool"))
  size = meta["image_size"]
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             train=False))
  variables, _ = weights.load(directory, expected=shapes)
  return model, variables, meta


def list_images(paths):
  """Expands directories (recursively, sorted) into image files; files are kept as given.

  Raises:
    FileNotFoundError: naming a path that does not exist.
    cli.UsageError: when there is no image at all (an empty result would write an empty
      table, or nothing, and look like success).
  """
  out = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    elif p.exists():
      out.append(p)
    else:
      raise FileNotFoundError(f"{p}: no such image file or directory")
  if not out:
    raise cli.UsageError(f"no images in {', '.join(map(str, paths))}: expected image files "
                         f"({', '.join(IMAGE_SUFFIXES)}) or directories holding them")
  return out


def read_image(path, size):
  """Decodes `path` to an RGB uint8 (size, size, 3) array with PIL bilinear resize."""
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
  except (OSError, ValueError) as e:
    raise cli.UsageError(f"{path}: unreadable image ({e}); expected a JPEG/PNG/BMP/WebP "
                         "file") from e


def probability_fn(model, variables, meta):
  """uint8 images (N, size, size, 3) -> class probabilities (N, C), the model's own
  normalisation inside (not jitted: callers jit or export it)."""

  def probabilities(images):
    x = pipeline.to_model_input({"image": images}, meta["mean"], meta["std"])["image"]
    return jax.nn.softmax(model.apply(variables, x, train=False)[0], -1)

  return probabilities


def predict(model, variables, meta, paths, batch_size=64):
  """Returns an (N, num_classes) array of class probabilities for the image files."""
  probs = jax.jit(probability_fn(model, variables, meta))
  out = []
  for start in range(0, len(paths), batch_size):
    chunk = [read_image(p, meta["image_size"]) for p in paths[start : start + batch_size]]
    pad = batch_size - len(chunk)  # one compiled shape for every batch
    batch = np.stack(chunk + [chunk[0]] * pad)
    out.append(np.asarray(probs(batch))[: len(chunk)])
  return np.concatenate(out) if out else np.zeros((0, meta["num_classes"]))


def predict_source(model, variables, meta, source, ops, batch_size=64):
  """(N, C) class probabilities and (N,) labels of every example of a data source (a split of
  a fer_jax.data dataset), decoded by the eval `ops` of its config."""
  probs = jax.jit(probability_fn(model, variables, meta))
  out, labels = [], []
  for batch in pipeline.eval_batches(source, ops, batch_size):
    keep = batch["_mask"]
    out.append(np.asarray(probs(jnp.asarray(batch["image"])))[keep])
    labels.append(batch["label"][keep])
  return np.concatenate(out), np.concatenate(labels)
