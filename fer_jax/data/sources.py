"""Random-access data sources and the dataset lookup by name.

A dataset is a module `fer_jax.data.<name>` that exports `load(dataset_config) -> Dataset`.
Adding one is adding a file; nothing here changes.

Every split is a `LabelledSource`: a store of per-example fields (the image, and landmarks
where a dataset has them) plus the labels kept beside it in memory, so a protocol (which rows,
which classes) or a noise draw is a new set of arrays over the same store, never a rewrite of
the stored data.
"""

import dataclasses
import importlib

import ml_collections
import numpy as np

from fer_jax import cli, expressions
from fer_jax.data import landmark_files


@dataclasses.dataclass(frozen=True)
class ArrayStore:
  """In-memory fields: `store[i]` is {"image": images[i], "landmarks": landmarks[i]?}."""

  images: np.ndarray
  landmarks: np.ndarray | None = None

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    fields = {"image": self.images[index]}
    if self.landmarks is not None:
      fields["landmarks"] = self.landmarks[index]
    return fields


@dataclasses.dataclass(frozen=True)
class LabelledSource:
  """A split: records `store[rows[i]]` with `label`, `index` and, under noise, `clean_label`.

  A grain RandomAccessDataSource. Records are dicts: `image` (H, W, 3) uint8, `label` and
  `index` int32, `clean_label` int32 when the labels were replaced (the known-flipped mask is
  `label != clean_label`, for scoring how well a method finds wrong labels; no loss reads it),
  `soft_label` (C,) float32 when the dataset gives label distributions, and whatever else the
  store returns (e.g. `landmarks`).

  Attributes:
    store: indexable per-example fields.
    labels: (N,) int labels used for training.
    names: (N,) the dataset's own example names (file names), for label files and reports.
    rows: (N,) positions in `store`, or None for 0..N-1.
    clean_labels: (N,) the labels before noise, or None when `labels` are the given ones.
    soft_labels: (N, C) label distributions, or None.
  """

  store: object
  labels: np.ndarray
  names: tuple[str, ...]
  rows: np.ndarray | None = None
  clean_labels: np.ndarray | None = None
  soft_labels: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.labels)
    sizes = {"names": len(self.names),
             "rows": n if self.rows is None else len(self.rows),
             "store": len(self.store) if self.rows is None else n,
             "clean_labels": n if self.clean_labels is None else len(self.clean_labels),
             "soft_labels": n if self.soft_labels is None else len(self.soft_labels)}
    wrong = {k: v for k, v in sizes.items() if v != n}
    if wrong:
      raise ValueError(f"{n} labels but sizes {wrong}")

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, index):
    record = dict(self.store[index if self.rows is None else self.rows[index]])
    record["label"] = np.int32(self.labels[index])
    record["index"] = np.int32(index)
    if self.clean_labels is not None:
      record["clean_label"] = np.int32(self.clean_labels[index])
    if self.soft_labels is not None:
      record["soft_label"] = self.soft_labels[index].astype(np.float32)
    return record

  def with_labels(self, labels):
    """The same examples with `labels` for training; the current ones become `clean_labels`."""
    labels = np.asarray(labels, np.int32)
    if labels.shape != self.labels.shape:
      raise ValueError(f"expected {self.labels.shape} labels, got {labels.shape}")
    clean = self.labels if self.clean_labels is None else self.clean_labels
    return dataclasses.replace(self, labels=labels, clean_labels=clean)


def concat(parts):
  """One source over several splits that share a store (e.g. FERPlus train+validation)."""
  first = parts[0]
  if any(p.store is not first.store for p in parts):
    raise ValueError("can only concatenate splits of one store")
  rows = [np.arange(len(p)) if p.rows is None else p.rows for p in parts]

  def cat(field):
    values = [getattr(p, field) for p in parts]
    return None if any(v is None for v in values) else np.concatenate(values)

  return LabelledSource(first.store, cat("labels"), sum((tuple(p.names) for p in parts), ()),
                        np.concatenate(rows), cat("clean_labels"), cat("soft_labels"))


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A dataset under one protocol.

  Attributes:
    name: the module name under fer_jax/data.
    class_names: label i is class_names[i], in the dataset's own class order.
    train, test: the splits.
    label_format: how label files of this dataset write a label: "one_based" (RAF-DB's 1..7),
      "zero_based" or "class_name".
    source: where the data came from, for reports.
  """

  name: str
  class_names: tuple[str, ...]
  train: LabelledSource
  test: LabelledSource
  label_format: str = "zero_based"
  source: str = ""

  def class_counts(self, split):
    labels = getattr(self, split).labels
    return np.bincount(labels, minlength=len(self.class_names))


def _module(name):
  try:
    return importlib.import_module(f"fer_jax.data.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"fer_jax.data.{name}":
      raise
    raise cli.UsageError(f"config.dataset.name={name!r}: no module fer_jax/data/{name}.py") from e


def default_config(name, **overrides):
  """The `config.dataset` block of dataset `name`: its module's DEFAULTS with `overrides`."""
  config = ml_collections.ConfigDict({"name": name, **_module(name).DEFAULTS})
  config.update(overrides)
  return config


def reorder(dataset, class_names):
  """`dataset` with labels re-indexed to `class_names` (matched by canonical name, e.g.
  NCCTFER's AffectNet order for every dataset)."""
  have = [expressions.canonical(n) for n in dataset.class_names]
  want = [expressions.canonical(n) for n in class_names]
  if sorted(have) != sorted(want):
    raise cli.UsageError(f"class order {list(class_names)}: dataset {dataset.name!r} has the "
                         f"classes {list(dataset.class_names)}")
  index = np.array([want.index(n) for n in have], np.int32)

  def relabel(split):
    return dataclasses.replace(
      split, labels=index[split.labels],
      clean_labels=None if split.clean_labels is None else index[split.clean_labels],
      soft_labels=None if split.soft_labels is None else split.soft_labels[:, np.argsort(index)])

  return dataclasses.replace(dataset, class_names=tuple(class_names), train=relabel(dataset.train),
                             test=relabel(dataset.test))


def load(dataset_config):
  """Loads `fer_jax.data.<dataset_config.name>` in its own class order (the order its label
  files use; `in_class_order` applies `class_order` afterwards, once noise is drawn).

  `dataset_config.train_landmarks`, where set, is a file of (N, 19, 2) landmarks for the
  training images (fer_jax/data/landmark_files.py), e.g. LA-Net's RAF-DB `.tensor` file.
  """
  dataset = _module(dataset_config.name).load(dataset_config)
  if dataset_config.get("train_landmarks"):
    dataset = landmark_files.with_train_landmarks(dataset, dataset_config.train_landmarks)
  return dataset


def in_class_order(dataset, dataset_config):
  """`dataset` re-indexed to `dataset_config.class_order`, if set."""
  if not dataset_config.class_order:
    return dataset
  return reorder(dataset, classes_by_name(dataset_config.class_order, len(dataset.class_names)))


def classes_by_name(order, num_classes):
  """A class order: "affectnet" (its first `num_classes`), or comma-separated names."""
  if order == "affectnet":
    return expressions.AFFECTNET[:num_classes]
  return tuple(n.strip() for n in order.split(","))
