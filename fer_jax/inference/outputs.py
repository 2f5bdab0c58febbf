"""What `python -m fer_jax.predict` writes: CSV rows of class probabilities (one per image, or one
per face of photos and video frames), annotated copies and aligned crops, never overwriting an
earlier output (directories are staged beside their final name and renamed when complete)."""

import collections
import contextlib
import csv
import os
import pathlib
import shutil
import tempfile

import numpy as np
from PIL import Image

from fer_jax import cli
from fer_jax.data import media

FACE_COLUMNS = ["path", "frame", "faces", "face", "box_x", "box_y", "box_w", "box_h", "score"]


def write_csv(path, image_paths, probabilities, class_names):
  """One row per image: its path, a probability per class, the predicted class."""
  path = pathlib.Path(path)
  with open(path, "x", newline="") as f:  # "x": never overwrite earlier results
    w = csv.writer(f)
    w.writerow(["path", *class_names, "predicted"])
    for p, row in zip(image_paths, probabilities):
      w.writerow([str(p), *(f"{v:.6f}" for v in row), class_names[int(np.argmax(row))]])


# --- faces of photos and videos ---------------------------------------------------------------
def face_rows(path, frame, predictions, class_names):
  """The CSV rows of one photo or frame: one per face, or one saying it has none."""
  where = [str(path), "" if frame is None else frame, len(predictions)]
  if not predictions:
    return [where + [""] * (len(FACE_COLUMNS) - len(where) + len(class_names) + 1)]
  return [where + [k, *(f"{v:.2f}" for v in p.face.box), f"{p.face.score:.6f}",
                   *(f"{v:.6f}" for v in p.probabilities),
                   class_names[int(np.argmax(p.probabilities))]]
          for k, p in enumerate(predictions)]


def label(prediction, class_names):
  """(box, "class probability", class index) of a face, for media.draw_boxes."""
  top = int(np.argmax(prediction.probabilities))
  text = f"{class_names[top]} {prediction.probabilities[top]:.2f}"
  return prediction.face.box, text, top


@contextlib.contextmanager
def _staged(directories):
  """Temporary directories beside each of `directories` (None stays None), renamed to them
  when the block ends without an error and removed when it raises: a stopped run leaves no
  half output that a rerun would refuse."""
  staged = []
  try:
    for directory in directories:
      if directory is None:
        staged.append(None)
        continue
      directory = pathlib.Path(directory)
      directory.parent.mkdir(parents=True, exist_ok=True)
      staged.append(pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.",
                                                  dir=directory.parent)))
    yield staged
    for work, directory in zip(staged, directories):
      if work is not None:
        if pathlib.Path(directory).exists():  # rename would replace an empty directory
          raise FileExistsError(f"{directory}: appeared while predicting; not overwritten")
        os.rename(work, directory)
  finally:
    for work in staged:
      if work is not None:
        shutil.rmtree(work, ignore_errors=True)


def check_outputs(output, annotate_dir=None, crops_dir=None, inputs=()):
  """Raises UsageError for an output that exists, or a directory inside an input directory
  (its files would be read as inputs next time)."""
  if annotate_dir and crops_dir and pathlib.Path(annotate_dir) == pathlib.Path(crops_dir):
    raise cli.UsageError(f"--annotate_dir and --crops_dir are both {annotate_dir}; give two "
                         "directories")
  for name, path in (("output", output), ("annotate_dir", annotate_dir),
                     ("crops_dir", crops_dir)):
    if path is None:
      continue
    if pathlib.Path(path).exists():
      raise cli.UsageError(f"--{name}={path} exists; choose another (outputs are never "
                           "overwritten)")
    for source in map(pathlib.Path, inputs):
      if name != "output" and source.is_dir() and (
          pathlib.Path(path).resolve().is_relative_to(source.resolve())):
        raise cli.UsageError(f"--{name}={path} is inside the input directory {source}; its "
                             "images would be read as inputs next time")


def write_face_predictions(predictor, paths, output, annotate_dir=None, crops_dir=None,
                           stride=1):
  """Writes the CSV `output` of every face in the photos and videos `paths` (videos at every
  `stride`-th frame), and the annotated copies and aligned crops when their directories are
  given (see the module docstring). Returns counts: photos, videos, frames, faces, empty."""
  check_outputs(output, annotate_dir, crops_dir)
  class_names = predictor.meta["class_names"]
  rows, counts = [], collections.Counter(photos=0, videos=0, frames=0, faces=0, empty=0)
  with _staged([annotate_dir, crops_dir]) as (annotated, crops):
    for path, stem in zip(paths, media.output_stems(paths)):
      counts["videos" if media.is_video(path) else "photos"] += 1
      for frame, image in media.read_frames(path, stride):
        found = predictor(image)
        rows += face_rows(path, frame, found, class_names)
        counts["frames"] += frame is not None
        counts["faces"] += len(found)
        counts["empty"] += not found
        name = stem if frame is None else stem / f"frame{frame:06d}"
        if annotated is not None:
          _save(media.draw_boxes(image, [label(p, class_names) for p in found]),
                annotated / f"{name}.jpg")
        for k, p in enumerate(found if crops is not None else ()):
          _save(p.crop, crops / f"{name}_face{k}.png")
    with open(output, "x", newline="") as f:  # "x": never overwrite earlier results
      writer = csv.writer(f)
      writer.writerow([*FACE_COLUMNS, *class_names, "predicted"])
      writer.writerows(rows)
  return dict(counts)


def _save(pixels, path):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
