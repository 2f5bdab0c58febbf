"""Users' own data: an image folder per class, or a CSV list of (path, label).

format="folders": `<data_dir>/<split>/<class_name>/<image>`; format="csv":
`<data_dir>/<split>.csv` with the header `path,label`, paths relative to data_dir (or absolute)
and labels given as class names. Classes are `config.dataset.class_names` in that order, or
else the class names of the train split, sorted. Label files of this dataset (noise files)
write class names.
"""

import csv
import pathlib

import tensorflow_datasets as tfds

from fer_jax import cli
from fer_jax.data import prepared, sources

FORMATS = ("folders", "csv")
DEFAULTS = {**prepared.DEFAULTS, "format": "folders", "class_names": ""}
LAYOUT = """\
  format=folders: <data_dir>/train/<class_name>/<image>, <data_dir>/test/<class_name>/<image>
  format=csv:     <data_dir>/train.csv, <data_dir>/test.csv with header "path,label"
                  (path relative to data_dir, label a class name)"""


class Folder(prepared.Builder):
  """A user's image folders or CSV lists; the label codes index the sorted train classes."""

  name = "fer_jax_folder"
  LAYOUT = LAYOUT
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f) for f in FORMATS]

  def label_files(self, root):
    root = pathlib.Path(root)
    if self.builder_config.name == "csv":
      return [root / f"{split}.csv" for split in self.SPLITS]
    # Directory times change when entries are added or removed: the folders' fingerprint.
    dirs = [root / split for split in self.SPLITS]
    return dirs + sorted(d for split in dirs if split.is_dir() for d in split.iterdir()
                         if d.is_dir())

  def parse(self, root, split):
    root = pathlib.Path(root)
    if self.builder_config.name == "csv":
      entries = _read_csv(root / f"{split}.csv", root)
    else:
      entries = [(path, path.parent.name, str(path)) for d in sorted((root / split).iterdir())
                 if d.is_dir() for path in sorted(d.iterdir())
                 if path.suffix.lower() in prepared.IMAGE_SUFFIXES]
      found = {label for _, label, _ in entries}
      empty = [d for d in sorted((root / split).iterdir()) if d.is_dir() and d.name not in found]
      if split == "train" and empty:  # a class with no training image would silently vanish
        raise prepared.DataError(f"{empty[0]}: class folder with no images "
                                 f"({', '.join(prepared.IMAGE_SUFFIXES)}); add images or remove "
                                 "the folder")
    if split == "train":
      self.info.metadata["class_names"] = sorted({label for _, label, _ in entries})
    class_names = self.info.metadata["class_names"]
    rows = []
    for path, label, where in entries:
      if label not in class_names:
        raise prepared.DataError(f"{where}: class {label!r} is not a class of the train split "
                                 f"{class_names}")
      rows.append(prepared.Row(str(path.relative_to(root) if path.is_relative_to(root)
                                   else path), class_names.index(label), path))
    if not rows:
      raise prepared.DataError(f"{root}: no images for split {split!r}; expected\n{LAYOUT}")
    return rows


def _read_csv(path, root):
  """(image path, class name, "file, line N") per row of a `path,label` CSV."""
  entries = []
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header != ["path", "label"]:
      raise prepared.DataError(f"{path}, line 1: header {header}: expected ['path', 'label']")
    for number, fields in enumerate(reader, 2):
      if not fields:
        continue
      where = f"{path}, line {number}"
      if len(fields) != 2 or not fields[1].strip():
        raise prepared.DataError(f"{where}: expected 'path,label', got {fields}")
      image = root / fields[0]
      if not image.is_file():
        raise prepared.DataError(f"{where}: expected the image {image}, which does not exist")
      entries.append((image, fields[1].strip(), where))
  return entries


def load(config):
  """The folder or CSV dataset as a `sources.Dataset`.

  Fields of `config`: data_dir, format ("folders" | "csv"), class_names (comma-separated, or
  empty for the sorted train classes), prepared_dir, cache_dir, corrupt_images, train_split,
  test_split.
  """
  if config.format not in FORMATS:
    raise cli.UsageError(f"config.dataset.format={config.format!r}: expected one of {FORMATS}")
  builder = prepared.open_builder(Folder, config, config.format)
  found = builder.info.metadata["class_names"]
  wanted = [n.strip() for n in config.class_names.split(",") if n.strip()] or found
  if sorted(wanted) != sorted(found):
    raise cli.UsageError(f"config.dataset.class_names={config.class_names!r}: the data has the "
                         f"classes {found}; list each of them once")
  remap = [wanted.index(name) for name in found]

  def split(name):
    labels = prepared.split_index(builder, name)["label"]
    return prepared.labelled(builder, name, [remap[label] for label in labels])

  return sources.Dataset("folder", tuple(wanted), split(config.train_split),
                         split(config.test_split), label_format="class_name",
                         source=str(config.data_dir))
