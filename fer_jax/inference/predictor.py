"""Running a model directory: loading it, reading face images, class probabilities; and the
faces of raw photos and video frames: detect -> align -> batch -> probabilities.

A model directory is `<workdir>/model` after training or a `python -m fer_jax.convert` output
(fer_jax/models/weights.py); a training workdir stands for its `model/`. Images go through
the model's recorded eval transform: RGB, bilinear resize to its image size, normalisation
with its mean/std (inside `probability_fn`).

  model, variables, meta = inference.load_model("runs/baseline")
  probs = inference.predict(model, variables, meta, inference.list_images(["faces/"]))

  predictor = inference.FacePredictor(model, variables, meta)   # one per model: it compiles
  for face, probs, crop in predictor(media.read_photo("party.jpg")):
    print(face.box, meta["class_names"][probs.argmax()])

Faces (faces.py, the `faces` extra) are found by MTCNN and aligned as the training data
was: a 100 px crop in RAF-DB's framing (`faces.align`, what `python -m fer_jax.faces align` and
RAF-DB's own aligned images are), then the eval transform above, so a face reaches the model at
the resolution and framing of the crops it was trained and evaluated on (a model of another
image size sees them upsampled from 100 px, as RAF-DB's were).
"""

import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fer_jax import cli
from fer_jax.data import pipeline
from fer_jax.data import media
from fer_jax.inference import faces
from fer_jax.models import resnet, weights

IMAGE_SUFFIXES = media.IMAGE_SUFFIXES
ALIGN_SIZE = 100  # RAF-DB's aligned crops are 100 px
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
  return media.list_files(paths, IMAGE_SUFFIXES)


def resize(image, size):
  """An RGB uint8 array resized to (size, size, 3) as the eval transform resizes: PIL bilinear."""
  return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def read_image(path, size):
  """Decodes `path` to an RGB uint8 (size, size, 3) array with PIL bilinear resize."""
  try:
    with Image.open(path) as img:
      return resize(np.asarray(img.convert("RGB")), size)
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


# --- faces of raw photos ----------------------------------------------------------------------
class FacePrediction(NamedTuple):
  """A detected face (faces.Face), its class probabilities (C,) and its aligned crop
  (ALIGN_SIZE, ALIGN_SIZE, 3) uint8."""

  face: faces.Face
  probabilities: np.ndarray
  crop: np.ndarray


def align_faces(image, min_face_size=20, score_threshold=0.9):
  """[(Face, aligned crop)] of the faces of an RGB uint8 image, largest first: MTCNN's boxes
  and points, each face aligned to an ALIGN_SIZE px crop in RAF-DB's framing."""
  found = faces.detect(image, min_face_size, score_threshold)
  return [(face, faces.align(image, face.points, ALIGN_SIZE)) for face in found]


class FacePredictor:
  """Class probabilities of every face in an image: `predictor(image)` -> [FacePrediction],
  largest face first. Holds one compiled model; a batch is padded to the next power of two
  (at most `batch_size`), so few shapes compile and a lone face costs one forward pass."""

  def __init__(self, model, variables, meta, min_face_size=20, score_threshold=0.9,
               batch_size=64):
    if batch_size < 1 or min_face_size < 1:
      raise cli.UsageError(f"batch_size={batch_size}, min_face_size={min_face_size}: expected "
                           "positive sizes")
    self.meta = meta
    self.min_face_size, self.score_threshold = min_face_size, score_threshold
    self.batch_size = batch_size
    self._probabilities = jax.jit(probability_fn(model, variables, meta))

  def model_inputs(self, crops):
    """(N, size, size, 3) uint8: aligned crops through the eval transform's resize."""
    size = self.meta["image_size"]
    resized = [resize(crop, size) for crop in crops]
    return np.stack(resized) if resized else np.zeros((0, size, size, 3), np.uint8)

  def probabilities(self, crops):
    """(N, C) class probabilities of aligned crops."""
    out = [np.zeros((0, self.meta["num_classes"]), np.float32)]
    for start in range(0, len(crops), self.batch_size):
      batch = self.model_inputs(crops[start : start + self.batch_size])
      n = len(batch)
      padded = min(self.batch_size, 1 << (n - 1).bit_length())
      batch = np.concatenate([batch, np.repeat(batch[:1], padded - n, 0)])
      out.append(np.asarray(self._probabilities(batch))[:n])
    return np.concatenate(out)

  def __call__(self, image):
    aligned = align_faces(image, self.min_face_size, self.score_threshold)
    probs = self.probabilities([crop for _, crop in aligned])
    return [FacePrediction(face, p, crop) for (face, crop), p in zip(aligned, probs)]


def predict_faces(model, variables, meta, image, **options):
  """[FacePrediction] of every face of one RGB image (options: those of FacePredictor). It
  compiles the model on each call: for many images or frames, call one FacePredictor."""
  return FacePredictor(model, variables, meta, **options)(image)


def face_crops(paths, limit, min_face_size=20, score_threshold=0.9):
  """(names `<image> face <k>`, aligned crops, images without a face) of the faces of the
  photos `paths`, at most `limit` faces."""
  names, crops, empty = [], [], []
  for path in paths:
    if len(crops) >= limit:
      break
    found = align_faces(media.read_photo(path), min_face_size, score_threshold)
    empty += [path] if not found else []
    for k, (_, crop) in enumerate(found[: limit - len(crops)]):
      names.append(f"{pathlib.Path(path).name} face {k}")
      crops.append(crop)
  return names, crops, empty
