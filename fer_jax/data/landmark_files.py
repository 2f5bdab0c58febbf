"""Per-image facial landmarks for training (LA-Net): files, point layouts, attaching them.

Every landmark array here is (N, 19, 2) float32, (x, y) pixels in the AFLW-19 order of
../shared/specs/lanet.md §6 (brows, eyes, nose, mouth, chin; image-left first in each group).
- `read_torch_tensor`: a `torch.save` file such as LA-Net's
  `Model_Data/raf_train_19_landmarks.tensor`, read without torch (fer_jax/models/torch_files.py) and
  through the allow-list of fer_jax/models/safe_pickle.py, so a hostile file is refused, never run.
- `aflw19_from_68`: the 68 iBUG/300-W points (AffectNet's CSV, dlib) mapped to the 19.
- `attach`: a split whose records carry `landmarks`, checked against its size.
"""

import dataclasses
import pickle
import zipfile

import numpy as np

from fer_jax import cli
from fer_jax.models import safe_pickle, torch_files

NUM_POINTS = 19
# For each AFLW-19 point, the 68-point indices it is (the mean of): lanet.md §6 option (b).
_FROM_68 = ((17,), (19,), (21,), (22,), (24,), (26,), (36,), (37, 38, 40, 41), (39,), (42,),
            (43, 44, 46, 47), (45,), (31,), (30,), (35,), (48,), (62, 66), (54,), (8,))


def aflw19_from_68(points):
  """(..., 68, 2) -> (..., 19, 2)."""
  points = np.asarray(points, np.float32)
  if points.shape[-2:] != (68, 2):
    raise ValueError(f"expected (..., 68, 2) landmarks, got shape {points.shape}")
  return np.stack([points[..., list(ids), :].mean(-2) for ids in _FROM_68], -2)


def read_torch_tensor(path):
  """The array saved by `torch.save(tensor, path)`.

  Raises:
    ValueError: naming the file, when it is not one tensor saved by torch, or (the refusal of
      safe_pickle, passed on as it is) when its pickle names anything but a tensor.
  """
  try:
    value = torch_files.load(path)
  except safe_pickle.RefusedError:
    raise
  except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError) as e:
    raise cli.UsageError(f"{path}: not a torch.save tensor file ({e})") from e
  if not isinstance(value, np.ndarray):
    raise cli.UsageError(f"{path}: holds a {type(value).__name__}, expected one tensor")
  return value


def load(path, num_examples):
  """Landmarks (num_examples, 19, 2) float32 from a .tensor (torch.save) or .npy file."""
  path = str(path)
  try:
    points = np.load(path) if path.endswith(".npy") else read_torch_tensor(path)
  except FileNotFoundError as e:
    raise cli.UsageError(f"{path}: landmark file not found") from e
  if points.shape != (num_examples, NUM_POINTS, 2):
    raise cli.UsageError(f"{path}: landmarks of shape {points.shape}, expected ({num_examples}, "
                         f"{NUM_POINTS}, 2): one row of 19 (x, y) points per training image, in "
                         "the order of the training list")
  return points.astype(np.float32)


# Landmark files give points in pixels of the image resized to FRAME x FRAME (LA-Net's RAF-DB
# file: the 224 px resize of the 100 px aligned faces); records carry them in their own pixels.
FRAME = 224


@dataclasses.dataclass(frozen=True)
class _WithLandmarks:
  store: object
  landmarks: np.ndarray

  def __len__(self):
    return len(self.store)

  def __getitem__(self, index):
    record = self.store[index]
    h, w = record["image"].shape[:2]
    scale = np.array([w / FRAME, h / FRAME], np.float32)
    return {**record, "landmarks": self.landmarks[index] * scale}


def attach(split, landmarks):
  """`split` (a LabelledSource) whose records carry `landmarks[i]` for its i-th example."""
  if len(landmarks) != len(split):
    raise cli.UsageError(f"{len(landmarks)} landmark rows for a split of {len(split)} examples")
  # Indexed by store position, so the split's own row mapping stays as it is.
  by_store = np.zeros((len(split.store), NUM_POINTS, 2), np.float32)
  by_store[np.arange(len(split)) if split.rows is None else split.rows] = landmarks
  return dataclasses.replace(split, store=_WithLandmarks(split.store, by_store))


def with_train_landmarks(dataset, path):
  """`dataset` whose training records carry the landmarks of file `path` (points in pixels of
  the FRAME px resized image), in the pixels of each record's image."""
  return dataclasses.replace(dataset, train=attach(dataset.train, load(path, len(dataset.train))))
