r"""Class probabilities for face images from a trained or converted model.

  python -m fer_jax.predict --checkpoint runs/baseline/model face1.jpg faces/ --output preds.csv

`--checkpoint` is a model directory (`<workdir>/model` after training, or a
`python -m fer_jax.convert` output) or a training workdir (its `model/` is used). Images are
preprocessed with the model's recorded eval transform: RGB, bilinear resize to its image
size, normalisation with its mean/std. The CSV has one row per image: path, one probability
column per class in the model's class order, and the predicted class. The library behind it
is fer_jax/inference.py.
"""

import csv
import pathlib

import numpy as np
from absl import flags

from fer_jax import cli, inference


def write_csv(path, image_paths, probabilities, class_names):
  """One row per image: its path, a probability per class, the predicted class."""
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
  paths = inference.list_images(argv[1:])  # before the model: the cheaper checks first
  model, variables, meta = inference.load_model(f.checkpoint)
  probabilities = inference.predict(model, variables, meta, paths, f.batch_size)
  write_csv(f.output, paths, probabilities, meta["class_names"])
  print(f"wrote {len(paths)} predictions to {f.output}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.")
  flags.DEFINE_string("output", "predictions.csv", "CSV to write (must not exist).")
  flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
  flags.mark_flags_as_required(["checkpoint"])
  cli.run(main)
