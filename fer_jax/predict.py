r"""Class probabilities for face images from a trained or converted model.

  python -m fer_jax.predict --checkpoint runs/baseline/model face1.jpg faces/ --output preds.csv

`--checkpoint` is a model directory (`<workdir>/model` after training, or a
`python -m fer_jax.convert` output) or a training workdir (its `model/` is used). Images are
preprocessed with the model's recorded eval transform: RGB, bilinear resize to its image
size, normalisation with its mean/std. The CSV has one row per image: path, one probability
column per class in the model's class order, and the predicted class.
"""

import csv
import pathlib

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from fer_jax.data import pipeline
from fer_jax.models import resnet, weights

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_model(directory):
  """Returns (model, variables, meta) for a model directory or a training workdir."""
  directory = pathlib.Path(directory)
  if not (directory / weights.META).exists() and (directory / "model" / weights.META).exists():
    directory = directory / "model"
  variables, meta = weights.load(directory)
  if not meta.get("has_head", True):
    raise ValueError(f"{directory}: this model has no classifier head (a converted backbone); "
                     "train it first (config.init_from) to predict expressions")
  model = resnet.Classifier(meta["arch"], meta["num_classes"], meta["width"],
                            neck=meta.get("neck", "pool"))
  return model, variables, meta


def list_images(paths):
  """Expands directories (recursively, sorted) into image files; files are kept as given."""
  out = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    elif p.exists():
      out.append(p)
    else:
      raise FileNotFoundError(f"{p}: no such image file or directory")
  return out


def read_image(path, size):
  """Decodes `path` to an RGB uint8 (size, size, 3) array with PIL bilinear resize."""
  try:
    with Image.open(path) as img:
      return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: unreadable image ({e}); expected a JPEG/PNG/BMP/WebP file") from e


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


def write_csv(path, image_paths, probabilities, class_names):
  path = pathlib.Path(path)
  with open(path, "x", newline="") as f:  # "x": never overwrite earlier results
    w = csv.writer(f)
    w.writerow(["path", *class_names, "predicted"])
    for p, row in zip(image_paths, probabilities):
      w.writerow([str(p), *(f"{v:.6f}" for v in row), class_names[int(np.argmax(row))]])


def main(argv):
  f = flags.FLAGS
  if len(argv) < 2:
    raise app.UsageError("give at least one image file or directory")
  if pathlib.Path(f.output).exists():
    raise FileExistsError(f"{f.output} exists; choose another --output")
  model, variables, meta = load_model(f.checkpoint)
  paths = list_images(argv[1:])
  probabilities = predict(model, variables, meta, paths, f.batch_size)
  write_csv(f.output, paths, probabilities, meta["class_names"])
  print(f"wrote {len(paths)} predictions to {f.output}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.")
  flags.DEFINE_string("output", "predictions.csv", "CSV to write (must not exist).")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
  flags.mark_flags_as_required(["checkpoint"])
  app.run(main)
