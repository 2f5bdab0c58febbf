"""Unpickling that builds tensors, arrays and plain containers, and nothing else.

A pickle names the callables that rebuild its objects (`module.name` globals) and the loader
imports and calls them, so a downloaded weight file can run any code it likes (`os.system`,
`builtins.eval`, ...). Every pickle fer_jax reads (torch zip and legacy checkpoints, the
VGGFace2 `.pkl`, landmark `.tensor` files) goes through `Unpickler`, whose `find_class` answers
only the globals of `_ALLOWED`: our own reconstructors for torch tensors and storages and numpy
arrays, dtypes and scalars, and the few builtins that protocol-2 pickles of containers name.
Any other global is refused when the pickle names it, before anything can call it.

Dicts, lists, tuples, strings and numbers need no globals: pickle has opcodes for them.
"""

import _compat_pickle
import collections
import math
import pickle
from typing import NamedTuple

import numpy as np

from fer_jax import cli


class RefusedError(ValueError):
  """The pickle names a global outside the allow-list; the message names the file and it."""


class StorageType(NamedTuple):
  """What `torch.<Name>Storage` unpickles to: persistent ids carry it with the storage key."""
  name: str
  dtype: np.dtype


STORAGE_TYPES = {
  name: StorageType(name, np.dtype(dtype)) for name, dtype in {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
  }.items()
}
_NDARRAY = object()  # stands for numpy.ndarray, which `_reconstruct` needs only to recognise


class _Call(tuple):
  """An allowed reconstructor. A tuple rather than the function itself, so that a BUILD opcode
  aimed at it cannot set attributes (on a plain function it could replace `__defaults__`)."""

  __slots__ = ()

  def __new__(cls, fn):
    return super().__new__(cls, (fn,))

  def __call__(self, *args):
    return self[0](*args)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2: a read-only view of `storage` (a 1-D array), checked to
  lie inside it; requires_grad, hooks and metadata are ignored."""
  del unused
  if not (isinstance(storage, np.ndarray) and storage.ndim == 1
          and storage.flags.c_contiguous):
    raise ValueError(f"a tensor over {type(storage).__name__}, expected a storage")
  size, stride = tuple(size), tuple(stride)
  numbers = (offset, *size, *stride)
  if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in numbers):
    raise ValueError(f"tensor offset {offset!r}, size {size!r}, stride {stride!r}: expected "
                     "non-negative integers, one stride per dimension")
  # The view must not read past the storage: as_strided does not check.
  end = offset + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if 0 not in size else 0)
  if end > len(storage):
    raise ValueError(f"tensor offset {offset}, size {size}, stride {stride} reaches past its "
                     f"storage of {len(storage)} elements")
  return np.lib.stride_tricks.as_strided(
    storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False)


def _rebuild_parameter(data, *unused):
  """torch._utils._rebuild_parameter(_with_state): the parameter's tensor."""
  del unused
  if not isinstance(data, np.ndarray):
    raise TypeError(f"a parameter of {type(data).__name__}, expected a tensor")
  return data


def _reconstruct(cls, shape, dtype):
  """numpy's `_reconstruct`: the empty array that `ndarray.__setstate__` (BUILD) then fills."""
  if cls is not _NDARRAY:
    raise ValueError("numpy _reconstruct of something other than numpy.ndarray")
  if not isinstance(shape, tuple) or math.prod(shape) != 0:
    raise ValueError(f"numpy _reconstruct of shape {shape!r}, expected an empty placeholder")
  return np.ndarray(shape, _dtype(dtype))


def _dtype(spec, align=False, copy=True):
  """numpy.dtype of a type string ('f4', or bytes b'b' from `_reconstruct`); always a copy, so
  the BUILD that follows sets the state of a new dtype, never of numpy's shared float32."""
  del copy
  if isinstance(spec, bytes):
    spec = spec.decode("latin1")
  if not isinstance(spec, str):
    raise TypeError(f"numpy dtype of {type(spec).__name__}, expected a type string")
  return np.dtype(spec, align=bool(align), copy=True)


def _scalar(dtype, data):
  """numpy's `scalar`: one value of `dtype` from its raw bytes (str in Python 2 pickles)."""
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise ValueError(f"numpy scalar of dtype {dtype!r}, expected a plain numeric dtype")
  if isinstance(data, str):
    data = data.encode("latin1")
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise ValueError(f"numpy scalar of {dtype}: expected {dtype.itemsize} bytes")
  return np.frombuffer(data, dtype)[0]


def _encode(text, encoding):
  """_codecs.encode as protocol 2 uses it to write bytes: latin1 only."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise ValueError(f"_codecs.encode(..., {encoding!r}), expected latin1 text")
  return text.encode("latin1")


def _empty_bytes():
  """builtins.bytes(), which protocol 2 writes for b''."""
  return b""


_ALLOWED = {
  ("collections", "OrderedDict"): collections.OrderedDict,
  ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
  ("builtins", "bytes"): _Call(_empty_bytes),
  ("_codecs", "encode"): _Call(_encode),
  ("numpy", "ndarray"): _NDARRAY,
  ("numpy", "dtype"): _Call(_dtype),
  **{(m, "_reconstruct"): _Call(_reconstruct)
     for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
  **{(m, "scalar"): _Call(_scalar) for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
  **{("torch._utils", n): _Call(_rebuild_tensor) for n in ("_rebuild_tensor",
                                                           "_rebuild_tensor_v2")},
  **{("torch._utils", n): _Call(_rebuild_parameter) for n in ("_rebuild_parameter",
                                                              "_rebuild_parameter_with_state")},
  **{("torch", n): t for n, t in STORAGE_TYPES.items()},
}


class Unpickler(pickle.Unpickler):
  """A pickle.Unpickler whose globals come from the allow-list only.

  Args:
    file: the open binary file, positioned at the pickle.
    source: what error messages call the file (its path).
    persistent_load: called with each persistent id (torch storages); None: ids are an error.
    encoding: how to decode Python 2 strings ("latin1" for pickles of numpy arrays).
  """

  def __init__(self, file, source, persistent_load=None, encoding="ASCII"):
    super().__init__(file, encoding=encoding)
    self._source, self._persistent_load = source, persistent_load

  def find_class(self, module, name):
    # Protocol <= 2 pickles (torch.save's, Python 2's) use Python 2 names, which pickle maps to
    # the Python 3 global it would call (commands.check_output: subprocess.check_output).
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    key = (module, name)
    if key not in _ALLOWED:
      raise RefusedError(f"{self._source}: refused to load: the pickle calls {module}.{name}, "
                         "which is not a tensor, array or container; only weight files are read")
    return _ALLOWED[key]

  def persistent_load(self, pid):
    if self._persistent_load is None:
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    return self._persistent_load(pid)


def load(file, source, persistent_load=None, encoding="ASCII"):
  """One object unpickled from the open binary `file` through the allow-list.

  Raises:
    RefusedError: the pickle names any other global (nothing of it has run).
    cli.UsageError (a ValueError): naming `source`, for anything else that is not a
      well-formed pickle of tensors, arrays and containers.
  """
  try:
    return Unpickler(file, source, persistent_load, encoding).load()
  except RefusedError:
    raise
  except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
          EOFError, OverflowError) as e:
    raise cli.UsageError(f"{source}: not a pickle of tensors, arrays and containers "
                         f"({type(e).__name__}: {e})") from e
