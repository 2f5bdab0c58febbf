"""Random-access data sources and the dataset lookup by name.

A dataset is a module `fer_jax.data.<name>` that exports `load(dataset_config) -> Dataset`.
Adding one is adding a file; nothing here changes.
"""

import dataclasses
import importlib

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """In-memory uint8 images with labels; a grain RandomAccessDataSource.

  Records are dicts: `image` (H, W, 3) uint8, `label` and `index` int32, and `landmarks`
  (19, 2) float32 when the dataset has them.
  """

  images: np.ndarray
  labels: np.ndarray
  landmarks: np.ndarray | None = None

  def __post_init__(self):
    if len(self.images) != len(self.labels):
      raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, index):
    record = {
      "image": self.images[index],
      "label": np.int32(self.labels[index]),
      "index": np.int32(index),
    }
    if self.landmarks is not None:
      record["landmarks"] = self.landmarks[index]
    return record


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  class_names: tuple[str, ...]
  train: ArraySource
  test: ArraySource

  def class_counts(self, split):
    labels = getattr(self, split).labels
    return np.bincount(labels, minlength=len(self.class_names))


def load(dataset_config):
  """Loads `fer_jax.data.<dataset_config.name>`."""
  name = dataset_config.name
  try:
    module = importlib.import_module(f"fer_jax.data.{name}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.dataset.name={name!r}: no module fer_jax/data/{name}.py") from e
  return module.load(dataset_config)
