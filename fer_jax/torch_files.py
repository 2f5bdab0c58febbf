"""Reads `torch.save` files into numpy without importing torch.

torch >= 1.6 saves a zip: `<name>/data.pkl` pickles the object tree, and each tensor's storage
is a raw little-endian member `<name>/data/<key>` referenced through pickle persistent ids.
The legacy (pre-zip) format needs torch itself.
"""

import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
  "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  if not size:
    return storage[offset].copy()
  strides = tuple(s * storage.itemsize for s in stride)
  return np.lib.stride_tricks.as_strided(storage[offset:], size, strides).copy()


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, archive, prefix):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix

  def find_class(self, module, name):
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    if module.startswith("torch"):
      raise pickle.UnpicklingError(f"unsupported torch object {module}.{name}")
    return super().find_class(module, name)

  def persistent_load(self, pid):
    kind, dtype, key, _, numel = pid
    if kind != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    raw = self._archive.read(f"{self._prefix}/data/{key}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)


def load(path):
  """Loads a torch.save file as nested dicts/lists of numpy arrays.

  Raises:
    ValueError: naming the file when it is not a torch zip and torch is not installed.
  """
  if not zipfile.is_zipfile(path):
    try:
      import torch
    except ImportError as e:
      raise ValueError(
        f"{path}: not a torch zip archive (legacy torch.save format?); "
        "install torch (pip install 'fer_jax[torch]') to read it"
      ) from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return _to_numpy(obj)
  with zipfile.ZipFile(path) as archive:
    pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
    if pkl is None:
      raise ValueError(f"{path}: zip archive without a data.pkl member; not a torch.save file")
    with archive.open(pkl) as f:
      return _Unpickler(f, archive, pkl.rsplit("/", 1)[0]).load()


def _to_numpy(obj):
  if isinstance(obj, dict):
    return {k: _to_numpy(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v) for v in obj)
  if hasattr(obj, "detach"):
    return obj.detach().cpu().numpy()
  return obj
