"""AffectNet, manually annotated set (and optionally the automatically annotated one).

`Manually_Annotated_file_lists/training.csv` and `validation.csv` list per image
subDirectory_filePath, the face box (face_x, face_y, face_width, face_height), 68 landmarks as
"x;y;x;y;...", expression 0..10 (0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt, 8 none, 9 uncertain, 10 non-face), valence and arousal. Images are under
`Manually_Annotated_Images/`. Preparing crops each image to its face box (the stored image is
the crop, landmarks are relative to it) and drops expressions 8..10, which no protocol uses.

The validation set (500 per class) is the papers' test set. `num_classes=8` keeps contempt,
7 drops it. The automatically annotated subset (`Automatically_annotated_file_list/
automatically_annotated.csv` with `Automatically_Annotated_Images/`), when present, is the split
`train_auto`: a training set with real label noise. Train with `config.input.sampler=balanced`,
the class-balanced sampler the papers use.
"""

import csv
import io
import logging
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from fer_jax import cli, expressions
from fer_jax.data import prepared, sources

COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
SPLIT_FILES = {
  "train": ("Manually_Annotated_file_lists/training.csv", "Manually_Annotated_Images"),
  "validation": ("Manually_Annotated_file_lists/validation.csv", "Manually_Annotated_Images"),
  "train_auto": ("Automatically_annotated_file_list/automatically_annotated.csv",
                 "Automatically_Annotated_Images"),
}
OPTIONAL_SPLITS = ("train_auto",)
NUM_CLASS_CODES = 8  # codes 8..10 are not expressions
DEFAULTS = {**prepared.DEFAULTS, "num_classes": 7, "test_split": "validation"}
LAYOUT = """\
  <data_dir>/Manually_Annotated_file_lists/training.csv      columns """ + ",".join(COLUMNS) + """
  <data_dir>/Manually_Annotated_file_lists/validation.csv    (a header row is optional)
  <data_dir>/Manually_Annotated_Images/<subDirectory_filePath>
  optional, the automatically annotated subset (split train_auto):
  <data_dir>/Automatically_annotated_file_list/automatically_annotated.csv
  <data_dir>/Automatically_Annotated_Images/<subDirectory_filePath>"""


class Affectnet(prepared.Builder):
  """AffectNet faces cropped by their boxes, expressions 0..7."""

  name = "fer_jax_affectnet"
  LAYOUT = LAYOUT
  SPLITS = tuple(SPLIT_FILES)

  def label_files(self, root):
    root = pathlib.Path(root)
    return [root / SPLIT_FILES[s][0] for s in SPLIT_FILES
            if s not in OPTIONAL_SPLITS or (root / SPLIT_FILES[s][0]).is_file()]

  def extra_features(self):
    return {"landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
            "valence": tfds.features.Scalar(np.float32),
            "arousal": tfds.features.Scalar(np.float32)}

  def parse(self, root, split):
    list_file, image_dir = (pathlib.Path(root) / p for p in SPLIT_FILES[split])
    if split in OPTIONAL_SPLITS and not list_file.is_file():
      return None
    rows, dropped = [], 0
    with open(list_file, newline="") as f:
      for number, fields in enumerate(csv.reader(f), 1):
        if number == 1 and fields and fields[0] == COLUMNS[0]:
          if tuple(fields[: len(COLUMNS)]) != COLUMNS:
            raise prepared.DataError(f"{list_file}, line 1: header {fields}: expected "
                                     f"{list(COLUMNS)}")
          continue
        if not fields:
          continue
        row = _parse_row(fields, f"{list_file}, line {number}", image_dir)
        if row is None:
          dropped += 1
        else:
          rows.append(row)
    logging.info("AffectNet %s: %d rows, %d with expression 8..10 left out", split, len(rows),
                 dropped)
    return rows

  def encode(self, row):
    image = prepared.read_image(row.path)[1].convert("RGB")
    x, y, w, h = row.fields["box"]
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, image.width), min(y + h, image.height)
    if right - left < 2 or bottom - top < 2:
      raise ValueError(f"face box {row.fields['box']} lies outside the {image.size} image")
    out = io.BytesIO()
    image.crop((left, top, right, bottom)).save(out, format="JPEG", quality=95)
    landmarks = row.fields["landmarks"] - np.array([left, top], np.float32)
    return {"image": out.getvalue(), "landmarks": landmarks,
            "valence": row.fields["valence"], "arousal": row.fields["arousal"]}


def _parse_row(fields, where, image_dir):
  """A `Row` of one CSV line, None for expressions 8..10; DataError naming the line otherwise."""
  if len(fields) < len(COLUMNS):
    raise prepared.DataError(f"{where}: {len(fields)} columns, expected {list(COLUMNS)}")
  path, *box, marks, expression, valence, arousal = fields[: len(COLUMNS)]
  try:
    box = [int(float(b)) for b in box]
    code = int(expression)
    valence, arousal = float(valence), float(arousal)
  except ValueError:
    raise prepared.DataError(f"{where}: face box {box}, expression {expression!r}, valence and "
                             "arousal: expected numbers") from None
  if not 0 <= code <= 10:
    raise prepared.DataError(f"{where}: expression {code}: expected 0..10")
  if code >= NUM_CLASS_CODES:
    return None
  try:
    landmarks = np.asarray([float(v) for v in marks.split(";") if v.strip()], np.float32)
    landmarks = landmarks.reshape(68, 2)
  except ValueError:
    raise prepared.DataError(f"{where}: facial_landmarks: expected 68 'x;y' pairs "
                             "(136 numbers separated by ';')") from None
  image = image_dir / path
  if not image.is_file():
    raise prepared.DataError(f"{where}: expected the image {image}, which does not exist")
  return prepared.Row(path, code, image, {"box": box, "landmarks": landmarks,
                                          "valence": valence, "arousal": arousal})


def load(config):
  """AffectNet as a `sources.Dataset` in AffectNet's class order (contempt dropped for 7).

  Fields of `config`: data_dir, num_classes (7 | 8), prepared_dir, cache_dir, corrupt_images,
  train_split ("train" | "train_auto"), test_split ("validation").
  """
  if config.num_classes not in (7, 8):
    raise cli.UsageError(f"config.dataset.num_classes={config.num_classes}: expected 7 or 8")
  builder = prepared.open_builder(Affectnet, config)

  def split(name):
    labels = prepared.split_index(builder, name)["label"]
    rows = np.flatnonzero(labels < config.num_classes)
    return prepared.labelled(builder, name, labels[rows], rows)

  return sources.Dataset("affectnet", expressions.AFFECTNET[: config.num_classes],
                         split(config.train_split), split(config.test_split),
                         source=str(config.data_dir))
