r"""`python -m fer_jax.faces`: aligned face crops from raw photos, and LA-Net landmark files for
any dataset. The library behind it is fer_jax/faces.py; both need `pip install -e ".[faces]"`.

  python -m fer_jax.faces align --input RAW_DIR --output ALIGNED_DIR [--size 100] \
      [--margin 0] [--min_face_size 20] [--score_threshold 0.9] [--largest_only]
  python -m fer_jax.faces landmarks --config configs/lanet.py:folder \
      --config.dataset.data_dir=ALIGNED_DIR --out train_landmarks.npy

align: every image under --input (any depth; .jpg .jpeg .png .bmp .webp, EXIF-rotated upright)
gives one crop per face, `<output>/<relative folder>/<stem>_face<k>.png` (k = 0 the largest), so a
`train/<class>/...` tree becomes a `folder` dataset, as the papers made theirs (MTCNN, then a
5-point similarity onto RAF-DB's framing). `<output>/faces.csv` lists every image: its faces'
boxes, scores and five points, or status no_face / unreadable. --output must not exist.

landmarks: the (N, 19, 2) file that `config.dataset.train_landmarks` takes (fer_jax/data/
landmark_files.py): per training image, in the order of the training list, the 19 AFLW points
in pixels of the image resized to 224 px, mapped from dlib's 68 points. The face box is dlib's
own detector's, else one placed by MTCNN's five points, else (no face found) the box dlib's
detector gives on an RAF-DB-style crop; `<out stem>.csv` says which for each image.
dlib's 68-point model was trained on iBUG 300-W, licensed for research use only: the
landmarks it makes are for research, not commercial use.
"""

import csv
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np
from absl import flags
from PIL import Image, ImageOps

from fer_jax import cli, faces

COMMANDS = ("align", "landmarks")
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
def main(argv):
  f = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    given = f"{argv[1:]}" if len(argv) > 1 else "none"
    raise cli.UsageError(f"expected one command, {' or '.join(COMMANDS)}; got {given}")
  if argv[1] == "align":
    for name in ("input", "output"):
      if not getattr(f, name):
        raise cli.UsageError(f"align needs --{name}")
    if f.size < 8 or f.min_face_size < 1:
      raise cli.UsageError(f"--size={f.size}, --min_face_size={f.min_face_size}: expected a "
                           "size of at least 8 px and a positive minimum face size")
    counts = align_folder(f.input, f.output, f.size, f.margin, f.min_face_size,
                          f.score_threshold, f.largest_only)
    print(f"{counts['images']} images: {counts['faces']} faces in {counts['with_faces']}, "
          f"{counts['no_face']} with no face, {counts['unreadable']} unreadable (listed in "
          f"{CSV_NAME}); wrote {f.output}")
    return
  if f.config is None or not f.out:
    raise cli.UsageError("landmarks needs --config (naming the dataset) and --out FILE.npy")
  counts = write_landmarks(f.config, f.out)
  print(f"{sum(counts.values())} images: boxes from dlib's detector {counts['dlib']}, from "
        f"MTCNN {counts['mtcnn']}, none found (whole image) {counts['whole_image']}; wrote "
        f"{f.out} and {pathlib.Path(f.out).with_suffix('.csv')} ({faces.LANDMARK_MODEL_NOTE})")


def define_flags():
  """The command's flags (defined only where it runs: `python -m fer_jax.faces`)."""
  from ml_collections import config_flags

  flags.DEFINE_string("input", "", "align: folder of raw photos (searched at any depth).")
  flags.DEFINE_string("output", "", "align: folder to create for the crops and faces.csv.")
  flags.DEFINE_integer("size", 100, "align: crop side in pixels (RAF-DB's aligned: 100).")
  flags.DEFINE_float("margin", 0.0, "align: extra border per side, a fraction of RAF-DB's "
                     "framing (0: RAF-DB's; 0.25: 1.5x as wide).")
  flags.DEFINE_integer("min_face_size", 20, "align: smallest face (box side, px) detected.")
  flags.DEFINE_float("score_threshold", 0.9, "align: smallest MTCNN score kept.")
  flags.DEFINE_bool("largest_only", False, "align: crop only the largest face of each image.")
  config_flags.DEFINE_config_file("config", None, "landmarks: config[:arg] naming the dataset, "
                                  "e.g. configs/lanet.py:folder.", lock_config=False)
  flags.DEFINE_string("out", "", "landmarks: .npy file to write (never overwritten). Uses "
                      "dlib's 68-point model: trained on iBUG 300-W, research use only.")
