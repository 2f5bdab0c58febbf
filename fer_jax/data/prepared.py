"""Licence-gated datasets as TFDS builders over the user's own copy.

The user's copy is TFDS's `manual_dir`: we never download it. Preparing it once writes
ArrayRecord files (random access, no TensorFlow; docs/design.md) that grain reads through
`as_data_source`, so epochs never re-parse label files or pixel strings. Examples keep the
order of the dataset's label file (`disable_shuffling`), and the labels and names of every
split are saved in the builder's metadata, so loading a protocol reads no images.

A dataset module subclasses `Builder`: it lists its splits and label files, parses the label
files into `Row`s (raising `DataError` that names the file and line of any bad row), and turns
one row into a record (`encode`). Images that cannot be decoded are always skipped and
listed at preparation time; `corrupt_images="fail"` then refuses to train on the result,
`"skip"` trains without them and says how many were left out.

A prepared copy is derived data: one whose metadata or ArrayRecord shards fail to read (a
truncated file, a disk that filled up) is deleted and prepared again from the user's copy, with
a warning naming the file, so training never reads half a copy. A preparation that does not
fit on its disk is cli.NoSpace naming the directory and the space needed.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import shutil

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from PIL import Image

from fer_jax import writers
from fer_jax.data import landmark_files, media, sources

CORRUPT_POLICIES = ("fail", "skip")
# config.dataset fields of every prepared dataset (each module adds its own).
DEFAULTS = dict(
  data_dir="",  # the user's copy (TFDS manual_dir)
  prepared_dir="",  # where the ArrayRecord copy goes; empty: <cache_dir>/prepared
  cache_dir="~/.cache/fer_jax",
  corrupt_images="fail",  # fail | skip: what to do with images that cannot be decoded
  train_split="train",
  test_split="test",
  # Train in another class order: "affectnet" or comma-separated names (NCCTFER trains every
  # dataset in AffectNet's order); empty: the dataset's own. Label files keep their own order.
  class_order="",
)
IMAGE_SUFFIXES = media.IMAGE_SUFFIXES
_CHUNK = 512  # rows decoded ahead of the writer


class DataError(ValueError):
  """Bad or missing dataset input; the message names the file (and line) and what was expected."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One example as its label file describes it, before any image is read.

  Attributes:
    name: the dataset's own example name (the label file's first column).
    label: the dataset's own label code (e.g. RAF-DB 1..7), as written in its files.
    path: the image file, or None when the pixels are in the label file.
    fields: other per-example values stored in the record (e.g. vote counts, a face box).
  """

  name: str
  label: int
  path: pathlib.Path | None = None
  fields: dict = dataclasses.field(default_factory=dict)


def read_image(path):
  """Bytes and the decoded RGB PIL image of `path`; OSError/ValueError if it cannot be decoded."""
  data = pathlib.Path(path).read_bytes()
  image = Image.open(io.BytesIO(data))
  image.load()  # decodes fully, so a truncated file fails here and not mid-training
  return data, image


def encode_png(pixels):
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="PNG")
  return out.getvalue()


_EXIF_ORIENTATION = 0x0112


def image_bytes(path):
  """The stored bytes of an image file: as is for an upright RGB JPEG, otherwise the pixels
  that predict reads (media.read_photo: upright, RGB, 8 bits) as PNG, so that a photo trains
  as it predicts whatever its mode (greyscale, CMYK, palette, alpha, 16-bit) or rotation."""
  data, image = read_image(path)
  if (image.mode == "RGB" and image.format == "JPEG"
      and image.getexif().get(_EXIF_ORIENTATION, 1) == 1):
    return data
  return encode_png(media.read_photo(path))


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the FER dataset builders; see the module docstring for what subclasses supply."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  SPLITS = ("train", "test")
  LAYOUT = ""  # the expected tree of the user's copy, shown in errors
  IMAGE_SHAPE = (None, None, 3)
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Point config.dataset.data_dir at your copy (see README.md)."

  def __init__(self, *, threads=8, **kwargs):
    self.threads = threads
    super().__init__(**kwargs)

  # --- what a dataset supplies -------------------------------------------------------------
  def label_files(self, root):
    """Files that must exist under `root` and whose change invalidates the prepared copy."""
    raise NotImplementedError

  def parse(self, root, split):
    """The `Row`s of `split`, in file order; raises DataError on any bad row."""
    raise NotImplementedError

  def encode(self, row):
    """The record fields of `row` besides name (at least `image`); may raise on bad images."""
    return {"image": image_bytes(row.path)}

  def extra_features(self):
    return {}

  def index_fields(self, row):
    """Small per-example values kept in the metadata index besides name and label."""
    del row
    return {}

  # --- TFDS -------------------------------------------------------------------------------
  def _info(self):
    features = {"image": tfds.features.Image(shape=self.IMAGE_SHAPE),
                "name": tfds.features.Text(), **self.extra_features()}
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(features),
      metadata=tfds.core.MetadataDict(),
      disable_shuffling=True,  # keep the label file's order: rows of landmark files follow it
    )

  def _split_generators(self, dl_manager):
    root = pathlib.Path(dl_manager.manual_dir)
    self.info.metadata.update({"index": {}, "skipped": {}, "source": str(root.absolute()),
                               "fingerprint": fingerprint(root, self.label_files(root))})
    splits = {}
    for split in self.SPLITS:
      rows = self.parse(root, split)
      if rows is not None:
        splits[split] = self._generate_examples(split, rows)
    return splits

  def _generate_examples(self, split, rows):
    index = {"name": [], "label": []}
    skipped = []
    self.info.metadata["index"][split] = index
    self.info.metadata["skipped"][split] = skipped

    def encode(row):
      try:
        return self.encode(row)
      except (OSError, ValueError) as e:  # PIL raises these for unreadable images
        return f"{row.path}: {type(e).__name__}: {e}"

    with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
      for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        for row, record in zip(chunk, pool.map(encode, chunk)):
          if isinstance(record, str):
            skipped.append([row.name, record])
            continue
          index["name"].append(row.name)
          index["label"].append(int(row.label))
          for key, value in self.index_fields(row).items():
            index.setdefault(key, []).append(value)
          yield len(index["name"]) - 1, {"name": row.name, **record}


def fingerprint(root, label_files):
  """A digest of what a prepared copy is made from: the path, size and modification time of
  each label file and of every image file under `root`. Any of them replaced, added, removed
  or touched gives another digest, hence another prepared directory (`open_builder`)."""
  paths = [pathlib.Path(f) for f in label_files]
  for directory, subdirs, files in os.walk(root):
    subdirs.sort()
    paths += [pathlib.Path(directory) / f for f in sorted(files)
              if pathlib.Path(f).suffix.lower() in IMAGE_SUFFIXES]
  digest = hashlib.sha1()
  for path in paths:
    stat = path.stat()
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:12]


def open_builder(builder_cls, config, builder_config=None):
  """The prepared builder for `config` (a dataset config block), preparing it once if needed.

  Args:
    builder_cls: a `Builder` subclass.
    config: fields data_dir, prepared_dir, cache_dir, corrupt_images.
    builder_config: the TFDS BuilderConfig name, if the builder has several.

  Raises:
    DataError: missing data_dir or label files, a copy changed since it was prepared, or
      corrupt images under corrupt_images="fail".
  """
  field = "config.dataset.data_dir"
  if not config.data_dir:
    raise DataError(f"{field} is empty: set it to your copy of {config.name}, laid out as\n"
                    f"{builder_cls.LAYOUT}")
  root = pathlib.Path(config.data_dir).expanduser()
  if not root.is_dir():
    raise DataError(f"{field}={root}: no such directory; expected a copy laid out as\n"
                    f"{builder_cls.LAYOUT}")
  if config.corrupt_images not in CORRUPT_POLICIES:
    raise DataError(f"config.dataset.corrupt_images={config.corrupt_images!r}: expected one of "
                    f"{CORRUPT_POLICIES}")
  prepared = pathlib.Path(config.prepared_dir or pathlib.Path(config.cache_dir) / "prepared")
  prepared = prepared.expanduser()
  # One prepared copy per source directory and state of its files: two copies of a dataset
  # never mix, and a copy changed since its preparation is prepared anew, never read stale.
  prefix = f"{config.name}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]}"
  files = builder_cls(data_dir=prepared / prefix, config=builder_config).label_files(root)
  missing = [str(f) for f in files if not pathlib.Path(f).exists()]
  if missing:
    raise DataError(f"{field}={root}: missing {', '.join(missing)}; expected a copy laid out as\n"
                    f"{builder_cls.LAYOUT}")
  current = fingerprint(root, files)
  copy = prepared / f"{prefix}-{current}"
  builder, damage = _open_prepared(builder_cls, copy, builder_config)
  if damage is not None:
    logging.warning("The prepared copy %s cannot be read (%s); deleting %s and preparing it again "
                    "from %s", *damage, copy, root)
    shutil.rmtree(copy)
    builder, _ = _open_prepared(builder_cls, copy, builder_config)
  earlier = sorted(str(p) for p in prepared.glob(f"{prefix}*") if p != copy)
  if earlier:
    logging.info("Earlier preparations of %s (the copy has changed since): %s; delete them to "
                 "free the space", root, ", ".join(earlier))
  if not builder.is_prepared():
    _prepare(builder, config.name, root, copy)
  meta = builder.info.metadata
  if meta["fingerprint"] != current:
    raise DataError(f"files under {root} changed while they were prepared into "
                    f"{builder.data_dir}; delete that directory to prepare them again")
  skipped = {split: rows for split, rows in meta["skipped"].items() if rows}
  if skipped:
    listing = "\n".join(f"  {split}: {name}: {why}" for split, rows in skipped.items()
                        for name, why in rows[:20])
    counts = {split: len(rows) for split, rows in skipped.items()}
    if config.corrupt_images == "fail":
      raise DataError(f"unreadable images in {root} (per split {counts}):\n{listing}\n"
                      "set config.dataset.corrupt_images=skip to train without them")
    logging.warning("Skipped unreadable images (per split %s):\n%s", counts, listing)
  return builder


def _open_prepared(builder_cls, copy, builder_config):
  """(the builder of the prepared copy in `copy`, None) when it reads or is not prepared yet;
  (None, (file, why)) when its metadata or a shard fails to read."""
  for path in sorted(copy.rglob("*.json")) if copy.exists() else ():
    try:  # every metadata file, TFDS's own `.config/metadata.json` included
      json.loads(path.read_text())
    except (ValueError, OSError) as e:
      return None, (str(path), f"{type(e).__name__}: {str(e)[:200]}")
  try:
    builder = builder_cls(data_dir=copy, config=builder_config, file_format="array_record")
    if not builder.is_prepared():
      return builder, None
    info = builder.info
    dict(info.metadata)
  except Exception as e:  # noqa: BLE001 (JSON, protobuf, TFDS: any failure to read it)
    found = sorted(copy.rglob("*.json")) or [copy]
    return None, (_culprit(found, e), f"{type(e).__name__}: {str(e)[:200]}")
  for split in info.splits.values():
    for path, expected in zip(split.filepaths, split.shard_lengths):
      try:
        reader = array_record_module.ArrayRecordReader(str(path))
        count = reader.num_records()
        reader.close()
      except (RuntimeError, OSError, ValueError) as e:
        return None, (str(path), f"{type(e).__name__}: {str(e)[:200]}")
      if count != expected:
        return None, (str(path), f"{count} records where {expected} were written")
  return builder, None


def _culprit(paths, error):
  """The file among `paths` that `error` names (JSON errors name none: the first JSON file
  that does not parse)."""
  named = [str(p) for p in paths if str(p) in str(error)]
  if named:
    return named[0]
  for path in paths:
    try:
      json.loads(pathlib.Path(path).read_text())
    except (ValueError, OSError):
      return str(path)
  return str(paths[0])


def _prepare(builder, name, root, copy):
  """Prepares `builder` from the user's copy `root`; a full disk removes the partial files and
  raises cli.NoSpace naming `copy` and the space needed (about the images' size)."""
  logging.info("Preparing %s from %s into %s (once; later runs reuse it)", name, root,
               builder.data_dir)
  needed = sum(p.stat().st_size for p in root.rglob("*")
               if p.suffix.lower() in IMAGE_SUFFIXES) * 5 // 4 + 2**20
  what, kept = f"preparing {name}", f"{root} is untouched"
  writers.check_space(copy, needed, what, kept)
  try:
    with writers.no_space_named(copy, needed, what, kept):
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  except BaseException:
    shutil.rmtree(copy, ignore_errors=True)  # never half a copy that a later run would trust
    raise


def split_index(builder, split):
  """The metadata index of `split` ("a" or "a+b"): dict of arrays, rows in stored order."""
  parts = [builder.info.metadata["index"][s] for s in _split_names(builder, split)]
  return {key: np.asarray(sum((list(p[key]) for p in parts), [])) for key in parts[0]}


def _split_names(builder, split):
  names = split.split("+")
  known = builder.info.metadata["index"]
  unknown = [s for s in names if s not in known]
  if unknown:
    raise DataError(f"split {split!r} of {builder.name}: no split {unknown}; the prepared copy "
                    f"has {sorted(known)}")
  return names


@dataclasses.dataclass(frozen=True)
class TfdsStore:
  """Images of a prepared split (or "a+b" splits) as {"image": (H, W, 3) uint8}, plus
  `landmarks` (19, 2) where the records have them (AffectNet's 68 points, mapped to 19)."""

  source: object

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.source[index]
    image = record["image"]
    fields = {"image": np.repeat(image, 3, -1) if image.shape[-1] == 1 else image}
    if "landmarks" in record:
      fields["landmarks"] = landmark_files.aflw19_from_68(record["landmarks"])
    return fields


def store(builder, split):
  _split_names(builder, split)
  return TfdsStore(builder.as_data_source(split=split))


def labelled(builder, split, labels, rows=None, soft_labels=None):
  """A `LabelledSource` over prepared `split`, with `labels` for its kept `rows`."""
  names = split_index(builder, split)["name"]
  if rows is not None:
    names = names[rows]
  return sources.LabelledSource(store(builder, split), np.asarray(labels, np.int32),
                                tuple(str(n) for n in names), rows, None, soft_labels)


def parse_lines(path, parse_line):
  """Applies `parse_line(fields, where)` to every non-empty line of a whitespace-split file."""
  rows = []
  with open(path, newline="") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        rows.append(parse_line(line.split(), f"{path}, line {number}"))
  return rows
