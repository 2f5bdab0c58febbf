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
import zipfile

import jax
import numpy as np
from absl import flags
from PIL import Image

from fer_jax import cli
from fer_jax.data import pipeline
from fer_jax.models import resnet, weights

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_model(directory):
  """Returns (model, variables, meta) for a model directory or a training workdir."""
  directory = pathlib.Path(directory)
  if not (directory / weights.META).exists() and (directory / "model" / weights.META).exists():
    directory = directory / "model"
  try:
    variables, meta = weights.load(directory)
  except (ValueError, EOFError, zipfile.BadZipFile) as e:  # np.load and json of its files
    raise cli.UsageError(f"{directory}: unreadable model files ({type(e).__name__}: {e}); "
                         "expected a model directory written by training or `convert`") from e
  missing = [k for k in ("arch", "num_classes", "width", "class_names", "image_size", "mean",
                         "std") if k not in meta]
  if missing:
    raise cli.UsageError(f"{directory / weights.META}: no {', '.join(missing)}; expected the "
                         "model.json of training or `python -m fer_jax.convert`")
  if not meta.get("has_head", True):
    raise cli.UsageError(f"{directory}: this model has no classifier head (a converted backbone); "
                         "train it first (config.init_from) to predict expressions")
  model = resnet.Classifier(meta["arch"], meta["num_classes"], meta["width"],
                            neck=meta.get("neck", "pool"))
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
    raise cli.UsageError("give at least one image file or directory")
  if pathlib.Path(f.output).exists():
    raise cli.UsageError(f"--output={f.output} exists; choose another --output")
  paths = list_images(argv[1:])  # before the model: the cheaper checks first
  model, variables, meta = load_model(f.checkpoint)
  probabilities = predict(model, variables, meta, paths, f.batch_size)
  write_csv(f.output, paths, probabilities, meta["class_names"])
  print(f"wrote {len(paths)} predictions to {f.output}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.")
  flags.DEFINE_string("output", "predictions.csv", "CSV to write (must not exist).")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
  flags.mark_flags_as_required(["checkpoint"])
  cli.run(main)
