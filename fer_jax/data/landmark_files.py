"""Per-image facial landmarks for training (LA-Net): files, point layouts, attaching them.

Every landmark array here is (N, 19, 2) float32, (x, y) pixels in the AFLW-19 order of
../shared/specs/lanet.md §6 (brows, eyes, nose, mouth, chin; image-left first in each group).
- `read_torch_tensor`: a `torch.save` file such as LA-Net's
  `Model_Data/raf_train_19_landmarks.tensor`, read without torch (the zip's pickle is parsed by
  a restricted unpickler that only rebuilds tensors; nothing else in it is executed).
- `aflw19_from_68`: the 68 iBUG/300-W points (AffectNet's CSV, dlib) mapped to the 19.
- `attach`: a split whose records carry `landmarks`, checked against its size.
"""

import collections
import dataclasses
import pickle
import zipfile

import numpy as np

NUM_POINTS = 19
# For each AFLW-19 point, the 68-point indices it is (the mean of): lanet.md §6 option (b).
_FROM_68 = ((17,), (19,), (21,), (22,), (24,), (26,), (36,), (37, 38, 40, 41), (39,), (42,),
            (43, 44, 46, 47), (45,), (31,), (30,), (35,), (48,), (62, 66), (54,), (8,))
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16}


def aflw19_from_68(points):
  """(..., 68, 2) -> (..., 19, 2)."""
  points = np.asarray(points, np.float32)
  if points.shape[-2:] != (68, 2):
    raise ValueError(f"expected (..., 68, 2) landmarks, got shape {points.shape}")
  return np.stack([points[..., list(ids), :].mean(-2) for ids in _FROM_68], -2)


class _TensorUnpickler(pickle.Unpickler):
  """Rebuilds the tensors of a torch.save pickle as numpy arrays; refuses any other global."""

  def __init__(self, file, archive, prefix):
    super().__init__(file)
    self.archive, self.prefix = archive, prefix

  def find_class(self, module, name):
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _DTYPES:
      return _DTYPES[name]
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a tensor file")

  def persistent_load(self, pid):
    kind, dtype, key, _location, numel = pid[:5]
    if kind != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    raw = self.archive.read(f"{self.prefix}data/{key}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)


def _rebuild_tensor(storage, offset, size, stride, *_):
  itemsize = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size),
                                         tuple(s * itemsize for s in stride)).copy()


def read_torch_tensor(path):
  """The array saved by `torch.save(tensor, path)` (zip format, torch >= 1.6)."""
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
      if len(pkl) != 1:
        raise ValueError("no single */data.pkl member")
      prefix = pkl[0][: -len("data.pkl")]
      with archive.open(pkl[0]) as f:
        value = _TensorUnpickler(f, archive, prefix).load()
  except (OSError, zipfile.BadZipFile, ValueError, pickle.UnpicklingError, KeyError) as e:
    raise ValueError(f"{path}: not a torch.save tensor file ({e})") from e
  if not isinstance(value, np.ndarray):
    raise ValueError(f"{path}: holds a {type(value).__name__}, expected one tensor")
  return value


def load(path, num_examples):
  """Landmarks (num_examples, 19, 2) float32 from a .tensor (torch.save) or .npy file."""
  path = str(path)
  try:
    points = np.load(path) if path.endswith(".npy") else read_torch_tensor(path)
  except FileNotFoundError as e:
    raise ValueError(f"{path}: landmark file not found") from e
  if points.shape != (num_examples, NUM_POINTS, 2):
    raise ValueError(f"{path}: landmarks of shape {points.shape}, expected ({num_examples}, "
                     f"{NUM_POINTS}, 2): one row of 19 (x, y) points per training image, in "
                     "the order of the training list")
  return points.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _WithLandmarks:
  store: object
  landmarks: np.ndarray

  def __len__(self):
    return len(self.store)

  def __getitem__(self, index):
    return {**self.store[index], "landmarks": self.landmarks[index]}


def attach(split, landmarks):
  """`split` (a LabelledSource) whose records carry `landmarks[i]` for its i-th example."""
  if len(landmarks) != len(split):
    raise ValueError(f"{len(landmarks)} landmark rows for a split of {len(split)} examples")
  # Indexed by store position, so the split's own row mapping stays as it is.
  by_store = np.zeros((len(split.store), NUM_POINTS, 2), np.float32)
  by_store[np.arange(len(split)) if split.rows is None else split.rows] = landmarks
  return dataclasses.replace(split, store=_WithLandmarks(split.store, by_store))


def with_train_landmarks(dataset, path):
  """`dataset` whose training records carry the landmarks of file `path`."""
  return dataclasses.replace(dataset, train=attach(dataset.train, load(path, len(dataset.train))))
