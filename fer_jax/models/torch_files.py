"""Reads `torch.save` files into numpy without importing torch, and without running their code.

torch >= 1.6 saves a zip: `<name>/data.pkl` pickles the object tree, and each tensor's storage
is a raw member `<name>/data/<key>` referenced through pickle persistent ids (`<name>/byteorder`
says little or big endian; little when absent). The legacy format (before torch 1.6, or
`_use_new_zipfile_serialization=False`) is one file of consecutive pickles: magic number,
protocol version, system info, the object tree, the sorted storage keys; then each storage
follows as an int64 element count and its raw little-endian elements.

Every pickle is read through fer_jax/models/safe_pickle.py's allow-list: a file whose pickles name
anything but tensors, storages, numpy arrays and containers is refused before any of it runs.
"""

import os
import zipfile

import numpy as np

from fer_jax import cli
from fer_jax.models import safe_pickle

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_BYTE_ORDERS = {"little": "<", "big": ">"}


def load(path):
  """Loads a torch.save file (zip or legacy) as nested dicts/lists of numpy arrays.

  Raises:
    safe_pickle.RefusedError: a pickle of the file names a global outside the allow-list.
    cli.UsageError (a ValueError): naming the file, when it is not a well-formed torch.save
      file.
  """
  if zipfile.is_zipfile(path):
    try:
      tree = _load_zip(path)
    except zipfile.BadZipFile as e:
      raise cli.UsageError(f"{path}: a damaged zip archive ({e}); not a torch.save file") from e
  else:
    tree = _load_legacy(path)
  return _own_arrays(tree, {})


def _storage_id(pid, length, path):
  """(storage type, key, numel) of a persistent id of `length` fields; UsageError otherwise."""
  if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage"
          and isinstance(pid[1], safe_pickle.StorageType) and isinstance(pid[2], str)
          and type(pid[4]) is int and pid[4] >= 0):
    raise cli.UsageError(f"{path}: unsupported persistent id {pid!r}, expected a tensor storage")
  return pid[1], pid[2], pid[4]


def _load_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = set(archive.namelist())
    pkl = min((n for n in names if n.endswith("/data.pkl")), default=None)
    if pkl is None:
      raise cli.UsageError(f"{path}: zip archive without a data.pkl member; not a torch.save file")
    prefix = pkl.rsplit("/", 1)[0]
    order = "<"
    if f"{prefix}/byteorder" in names:
      text = archive.read(f"{prefix}/byteorder").decode("ascii", "replace").strip()
      if text not in _BYTE_ORDERS:
        raise cli.UsageError(f"{path}: byteorder {text!r}, expected one of {sorted(_BYTE_ORDERS)}")
      order = _BYTE_ORDERS[text]
    storages = {}

    def storage(pid):
      storage_type, key, numel = _storage_id(pid, 5, path)
      if key not in storages:
        member = f"{prefix}/data/{key}"
        if member not in names:
          raise cli.UsageError(f"{path}: no member {member} for a tensor storage")
        raw = archive.read(member)
        dtype = storage_type.dtype.newbyteorder(order)
        if len(raw) < numel * dtype.itemsize:
          raise cli.UsageError(f"{path}: {member} holds {len(raw)} bytes, fewer than {numel} "
                               f"{storage_type.name} elements")
        storages[key] = np.frombuffer(raw, dtype, numel)
      return storages[key]

    with archive.open(pkl) as f:
      return safe_pickle.load(f, path, storage)


def _load_legacy(path):
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    try:
      magic = safe_pickle.load(f, path)
    except safe_pickle.RefusedError:
      raise
    except ValueError as e:
      magic = e
    if type(magic) is not int or magic != _LEGACY_MAGIC:
      raise cli.UsageError(f"{path}: not a torch.save file (neither a zip archive nor a legacy "
                           "torch pickle)")
    protocol = safe_pickle.load(f, path)
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
      raise cli.UsageError(f"{path}: legacy torch.save protocol {protocol!r}, expected "
                           f"{_LEGACY_PROTOCOL}")
    safe_pickle.load(f, path)  # system info; the storages are little-endian whatever it says
    # Storage data follows the object tree, so tensors are views of arrays filled afterwards.
    storages = {}

    def storage(pid):
      storage_type, key, numel = _storage_id(pid, 6, path)
      if numel * storage_type.dtype.itemsize > size:
        raise cli.UsageError(f"{path}: a storage of {numel} elements, larger than the file")
      array = storages.setdefault(key, np.zeros(numel, storage_type.dtype))
      if array.dtype != storage_type.dtype or len(array) != numel:
        raise cli.UsageError(f"{path}: storage {key} is declared twice, differently")
      view = pid[5]
      if view is None:
        return array
      if not (isinstance(view, tuple) and len(view) == 3
              and all(type(v) is int and v >= 0 for v in view[1:])
              and view[1] + view[2] <= numel):
        raise cli.UsageError(f"{path}: storage view {view!r} outside storage {key} of {numel}")
      return array[view[1]:view[1] + view[2]]

    tree = safe_pickle.load(f, path, storage, encoding="latin1")
    keys = safe_pickle.load(f, path)
    if (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
        or sorted(set(keys)) != sorted(storages)):
      raise cli.UsageError(f"{path}: storage keys {keys!r} do not match the object tree's "
                           f"{sorted(storages)}")
    for key in keys:
      array = storages[key]
      count = int(np.frombuffer(_read(f, 8, path), "<i8")[0])
      if count != len(array):
        raise cli.UsageError(f"{path}: storage {key} holds {count} elements, expected {len(array)}")
      array[:] = np.frombuffer(_read(f, array.nbytes, path), array.dtype.newbyteorder("<"))
  return tree


def _read(f, n, path):
  data = f.read(n)
  if len(data) != n:
    raise cli.UsageError(f"{path}: truncated legacy torch.save file")
  return data


def _own_arrays(obj, done):
  """`obj` with each array replaced by a writable native-order copy: tensors unpickle as
  read-only views of their storages. `done` maps id -> result, so shared objects are visited
  once and cycles (through lists and dicts) end."""
  if id(obj) in done:
    return done[id(obj)]
  if isinstance(obj, np.ndarray):
    done[id(obj)] = np.array(obj, obj.dtype.newbyteorder("="))
  elif type(obj) is tuple:
    done[id(obj)] = tuple(_own_arrays(v, done) for v in obj)
  elif isinstance(obj, dict):
    done[id(obj)] = obj
    for k in list(obj):
      obj[k] = _own_arrays(obj[k], done)
  elif isinstance(obj, list):
    done[id(obj)] = obj
    obj[:] = [_own_arrays(v, done) for v in obj]
  else:
    return obj
  return done[id(obj)]
