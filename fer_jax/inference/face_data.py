"""Datasets made from raw photos, as the papers made theirs: aligned face crops of a folder of
photos (`align_folder`) and LA-Net's 19-landmark file for any dataset (`write_landmarks`). The
command is `python -m fer_jax.faces` (its docstring has the details); both need the `faces` extra.
"""

import csv
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image, ImageOps

from fer_jax import cli
from fer_jax.inference import faces

# The image files a dataset folder holds (fer_jax/data/prepared.py, not imported: it loads TFDS).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CSV_NAME = "faces.csv"
LANDMARK_SIZE = 224  # landmark files are in pixels of the 224 px image (landmark_files.py)
# The box dlib's detector gives on an aligned face, (left, top, side) in the 112 px template
# frame of faces.TEMPLATE_112 (measured on skimage's astronaut at two margins): how a face
# placed by MTCNN's points, or an RAF-DB-style crop, gets a box like those dlib was trained on.
DLIB_BOX_112 = (19.0, 39.0, 72.0)


# --- align --------------------------------------------------------------------------------------
def _images(root):
  return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read(path):
  """The RGB pixels of an image file, upright as its EXIF orientation says; None if unreadable."""
  try:
    with Image.open(path) as image:
      return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError):
    return None


def _crop_stems(paths, root):
  """Output stem per input (relative, without suffix); inputs sharing a stem keep the suffix."""
  stems = [p.relative_to(root).with_suffix("") for p in paths]
  counts = {}
  for stem in stems:
    counts[stem] = counts.get(stem, 0) + 1
  return [stem if counts[stem] == 1 else stem.with_name(f"{stem.name}_{p.suffix.lower()[1:]}")
          for stem, p in zip(stems, paths)]


def _csv_header():
  points = [f"{name}_{axis}" for name in faces.POINT_NAMES for axis in "xy"]
  return ["image", "status", "face", "crop", "score", "box_x", "box_y", "box_w", "box_h",
          *points]


def _face_row(image, k, crop, face):
  return [image, "face", k, crop, f"{face.score:.6f}", *(f"{v:.2f}" for v in face.box),
          *(f"{v:.2f}" for v in face.points.ravel())]


def align_folder(source, output, size=100, margin=0.0, min_face_size=20, score_threshold=0.9,
                 largest_only=False, progress=True):
  """Writes aligned crops of every face under `source` and faces.csv to `output` (created;
  refused if it exists). Returns counts: images, faces, with_faces, no_face, unreadable."""
  source, output = pathlib.Path(source), pathlib.Path(output)
  if not source.is_dir():
    raise cli.UsageError(f"--input={source}: not a directory of images")
  if output.exists():
    raise cli.UsageError(f"--output={output} exists; choose another (outputs are never "
                         "overwritten)")
  if output.resolve().is_relative_to(source.resolve()):
    raise cli.UsageError(f"--output={output} is inside --input={source}; the crops would be "
                         "read as inputs next time")
  paths = _images(source)
  if not paths:
    raise cli.UsageError(f"--input={source}: no images ({' '.join(IMAGE_SUFFIXES)}) in it")
  output.parent.mkdir(parents=True, exist_ok=True)
  # Written beside `output` and renamed at the end, so a stopped run leaves no half output.
  work = pathlib.Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
  counts = {"images": len(paths), "faces": 0, "with_faces": 0, "no_face": 0, "unreadable": 0}
  try:
    with open(work / CSV_NAME, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(_csv_header())
      for path, stem in zip(_bar(paths, progress, "images"), _crop_stems(paths, source)):
        name = path.relative_to(source).as_posix()
        pixels = _read(path)
        found = [] if pixels is None else faces.detect(pixels, min_face_size, score_threshold)
        if pixels is None or not found:
          status = "unreadable" if pixels is None else "no_face"
          counts[status] += 1
          writer.writerow([name, status] + [""] * (len(_csv_header()) - 2))
          continue
        counts["with_faces"] += 1
        for k, face in enumerate(found[:1] if largest_only else found):
          crop = stem.with_name(f"{stem.name}_face{k}.png")
          (work / crop).parent.mkdir(parents=True, exist_ok=True)
          Image.fromarray(faces.align(pixels, face.points, size, margin)).save(work / crop)
          writer.writerow(_face_row(name, k, crop.as_posix(), face))
          counts["faces"] += 1
    os.rename(work, output)  # fails, rather than merges, if `output` appeared meanwhile
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return counts


def _bar(items, progress, unit):
  if not progress:
    return items
  import tqdm

  return tqdm.tqdm(items, unit=unit, dynamic_ncols=True, file=sys.stderr)


# --- landmarks ----------------------------------------------------------------------------------
def _box_from_points(points):
  """A dlib-style box (x, y, w, h) for a face whose five points are `points` (5, 2)."""
  matrix = faces.similarity(faces.TEMPLATE_112, points)
  left, top, side = DLIB_BOX_112
  corners = faces.transform([[left, top], [left + side, top + side]], matrix)
  centre, scale = corners.mean(0), np.hypot(*matrix[:, 0])
  half = side * scale / 2
  return (centre[0] - half, centre[1] - half, 2 * half, 2 * half)


def face_landmarks(image):
  """(19 AFLW points (19, 2) in pixels of `image`, box source, box) for one face image: the box
  of dlib's detector, else from MTCNN's points, else that of an RAF-DB-style crop."""
  detector, _ = faces.dlib_models()
  found = list(detector(np.ascontiguousarray(image), 0))
  if found:
    rect = max(found, key=lambda r: r.width() * r.height())
    source, box = "dlib", (rect.left(), rect.top(), rect.width(), rect.height())
  else:
    mtcnn = faces.detect(image, min_face_size=image.shape[0] // 8, score_threshold=0.5)
    source, box = (("mtcnn", _box_from_points(mtcnn[0].points)) if mtcnn
                   else ("whole_image", _box_from_points(faces.template(image.shape[0]))))
  points = faces.landmarks19(image, box)
  # Inside the frame, as the official RAF-DB file's heatmap detector places every point.
  return np.clip(points, 0, np.array(image.shape[1::-1]) - 1), source, box


def dataset_landmarks(split, progress=True):
  """(N, 19, 2) float32 landmarks of a split's images resized to 224 px (bicubic, as LA-Net's
  training resizes them), in the split's order, and the box source and box of each."""
  points = np.zeros((len(split), 19, 2), np.float32)
  boxes = []
  for i in _bar(range(len(split)), progress, "images"):
    image = Image.fromarray(split[i]["image"]).convert("RGB")
    image = np.asarray(image.resize((LANDMARK_SIZE, LANDMARK_SIZE), Image.Resampling.BICUBIC))
    points[i], source, box = face_landmarks(image)
    boxes.append((source, box))
  return points, boxes


def write_landmarks(config, out, progress=True):
  """Writes the landmark file `out` (.npy) of config's training split, and `<out stem>.csv`."""
  from fer_jax.data import sources  # loads TFDS: only here

  out = pathlib.Path(out)
  report = out.with_suffix(".csv")
  if out.suffix != ".npy":
    raise cli.UsageError(f"--out={out}: expected a .npy file (config.dataset.train_landmarks "
                         "reads .npy or torch .tensor files)")
  for path in (out, report):
    if path.exists():
      raise cli.UsageError(f"{path} exists; not overwritten")
  faces.dlib_models()  # a missing extra is reported before the dataset loads
  cli.check_dataset(config.dataset.name)
  split = sources.load(config.dataset).train
  points, boxes = dataset_landmarks(split, progress)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.save(out, points)
  with open(report, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["index", "name", "box_source", "box_x", "box_y", "box_w", "box_h"])
    for i, (name, (source, box)) in enumerate(zip(split.names, boxes)):
      writer.writerow([i, name, source, *(f"{v:.1f}" for v in box)])
  return {s: sum(b[0] == s for b in boxes) for s in ("dlib", "mtcnn", "whole_image")}


# --- command ------------------------------------------------------------------------------------
