"""RAF-DB basic, from the user's copy laid out as its authors distribute it.

`EmoLabel/list_patition_label.txt` lists `train_00001.jpg 5` per line, labels 1..7 = surprise,
fear, disgust, happiness, sadness, anger, neutral; train rows are those named `train_*`, test
rows `test_*`. Aligned 100x100 faces are `Image/aligned/train_00001_aligned.jpg` (everything
after the first "." of the list name is replaced by `_aligned.jpg`); the original images,
`Image/original/train_00001.jpg`, are the `images="original"` option.
"""

import logging
import pathlib

import tensorflow_datasets as tfds

from fer_jax import expressions
from fer_jax.data import prepared, sources

LABEL_FILE = "EmoLabel/list_patition_label.txt"
EXPECTED_COUNTS = {"train": 12271, "test": 3068}  # the official release (eac.md §4)
DEFAULTS = {**prepared.DEFAULTS, "images": "aligned"}  # aligned | original
LAYOUT = """\
  <data_dir>/EmoLabel/list_patition_label.txt   lines "train_00001.jpg 5", labels 1..7
  <data_dir>/Image/aligned/train_00001_aligned.jpg   (images="aligned", the default)
  <data_dir>/Image/original/train_00001.jpg          (images="original")"""


def image_path(root, name, images):
  if images == "aligned":
    return pathlib.Path(root) / "Image/aligned" / f"{name.split('.')[0]}_aligned.jpg"
  return pathlib.Path(root) / "Image/original" / name


def parse_label_file(path, num_classes=len(expressions.RAF_DB)):
  """(name, label 1..7, "file, line N") per line of a RAF-DB list file; DataError otherwise."""

  def parse(fields, where):
    if len(fields) != 2:
      raise prepared.DataError(f"{where}: expected '<name> <label>', got {' '.join(fields)!r}")
    name, label = fields
    if not label.isdigit() or not 1 <= int(label) <= num_classes:
      raise prepared.DataError(f"{where}: label {label!r} of {name}: expected 1..{num_classes}")
    return name, int(label), where

  return prepared.parse_lines(path, parse)


class RafDb(prepared.Builder):
  """RAF-DB basic expression set (7 classes)."""

  name = "fer_jax_raf_db"
  LAYOUT = LAYOUT
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="aligned", description="100x100 aligned"),
                     tfds.core.BuilderConfig(name="original", description="original images")]

  def label_files(self, root):
    return [pathlib.Path(root) / LABEL_FILE]

  def parse(self, root, split):
    path = pathlib.Path(root) / LABEL_FILE
    rows, seen = [], set()
    for name, label, where in parse_label_file(path):
      if not name.startswith(("train", "test")):
        raise prepared.DataError(f"{where}: {name!r} names neither a train_ nor a test_ image")
      if name in seen:
        raise prepared.DataError(f"{where}: {name} is listed twice")
      seen.add(name)
      if name.startswith(split):
        image = image_path(root, name, self.builder_config.name)
        if not image.is_file():
          raise prepared.DataError(f"{where}: {name}: expected the image {image}, which does "
                                   "not exist")
        rows.append(prepared.Row(name, label, image))
    return rows


def load(config):
  """RAF-DB as a `sources.Dataset`: labels 0..6 in RAF-DB's order.

  Fields of `config`: data_dir, images ("aligned" | "original"), prepared_dir, cache_dir,
  corrupt_images, train_split, test_split.
  """
  builder = prepared.open_builder(RafDb, config, config.images)

  def split(name):
    index = prepared.split_index(builder, name)
    if len(index["label"]) != EXPECTED_COUNTS.get(name, len(index["label"])):
      logging.warning("RAF-DB %s has %d images; the official release has %d", name,
                      len(index["label"]), EXPECTED_COUNTS[name])
    return prepared.labelled(builder, name, index["label"] - 1)

  return sources.Dataset("raf_db", expressions.RAF_DB, split(config.train_split),
                         split(config.test_split), label_format="one_based",
                         source=str(config.data_dir))
