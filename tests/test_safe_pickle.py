"""Weight and tensor files never run code: hostile pickles are refused before anything is
called, in every layout fer_jax reads, and the real formats still load."""

import collections
import copyreg
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from fer_jax.data import landmark_files
from fer_jax.models import safe_pickle, torch_convert, torch_files

_LEGACY_HEADER = b"".join(pickle.dumps(v, 2) for v in (
  0x1950A86A20F9469CFC6C, 1001,
  {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4,
                                                                     "long": 4}}))


class _Call:
  """Pickles as `fn(*args)`: what a hostile file asks the loader to run."""

  def __init__(self, fn, *args):
    self.fn, self.args = fn, args

  def __reduce__(self):
    return self.fn, self.args


def _val(x):
  """The opcodes of a plain value, to splice into a hand-written protocol-2 pickle."""
  return pickle.dumps(x, 2)[2:-1]


def _glob(module, name):
  return b"c" + f"{module}\n{name}\n".encode()


def _touch(marker):
  return f"open({str(marker)!r}, 'w').close()"


# Each: (marker path) -> (a complete pickle, the global its refusal must name).
PAYLOADS = {
  "os.system": lambda m: (
    b"\x80\x02" + _glob("os", "system") + _val((f"touch {m}",)) + b"R.", "os.system"),
  "posix.system via __reduce__": lambda m: (
    pickle.dumps(_Call(os.system, f"touch {m}")), f"{os.system.__module__}.system"),
  "builtins.eval": lambda m: (pickle.dumps(_Call(eval, _touch(m))), "builtins.eval"),
  "builtins.exec": lambda m: (pickle.dumps(_Call(exec, _touch(m))), "builtins.exec"),
  "subprocess.Popen": lambda m: (
    pickle.dumps(_Call(subprocess.Popen, ["touch", str(m)])), "subprocess.Popen"),
  "subprocess.check_output": lambda m: (
    pickle.dumps(_Call(subprocess.check_output, ["touch", str(m)])),
    "subprocess.check_output"),
  "protocol 0 INST": lambda m: (f"(S'touch {m}'\nios\nsystem\n.".encode(), "os.system"),
  "reduce nested in a state_dict value": lambda m: (pickle.dumps(collections.OrderedDict([
    ("conv1.weight", np.zeros((2, 3, 1, 1), np.float32)),
    ("bn1.weight", {"note": [1, (_Call(os.system, f"touch {m}"),)]})])),
    f"{os.system.__module__}.system"),
}


def _write_torch_zip(path, data_pkl):
  """The torch >= 1.6 layout around `data_pkl`, with one 4-float storage `0`."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", data_pkl)
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/data/0", np.arange(4, dtype="<f4").tobytes())
    z.writestr("archive/version", "3\n")


# Each: (path stem, pickle bytes) -> (file written, function that reads it as fer_jax does).
LAYOUTS = {
  "vggface2 .pkl": lambda d, b: (_write(d / "resnet50_ft_weight.pkl", b), torch_convert.read_checkpoint),
  "torch zip": lambda d, b: (_write_zip(d / "weights.pth", b), torch_files.load),
  "legacy torch": lambda d, b: (
    _write(d / "res18_naive.pth_MSceleb.tar", _LEGACY_HEADER + b + pickle.dumps([], 2)),
    torch_convert.read_checkpoint),
  "landmark .tensor": lambda d, b: (
    _write_zip(d / "raf_train_19_landmarks.tensor", b), lambda p: landmark_files.load(p, 4)),
}


def _write(path, data):
  path.write_bytes(data)
  return path


def _write_zip(path, data_pkl):
  _write_torch_zip(path, data_pkl)
  return path


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_pickle_is_refused_before_it_runs(tmp_path, payload, layout):
  marker = tmp_path / "payload_ran"
  data, name = PAYLOADS[payload](marker)
  path, read = LAYOUTS[layout](tmp_path, data)
  with pytest.raises(safe_pickle.RefusedError) as e:
    read(str(path))
  assert isinstance(e.value, ValueError)  # what the CLIs report as a one-line error
  assert str(e.value) == (f"{path}: refused to load: the pickle calls {name}, which is not a "
                          "tensor, array or container; only weight files are read")
  assert not marker.exists()


def test_extension_registry_opcode_is_refused(tmp_path):
  """EXT2 names a global through copyreg's registry instead of by name."""
  marker = tmp_path / "payload_ran"
  copyreg.add_extension("os", "system", 0xABCD)
  try:
    data = b"\x80\x02\x83" + (0xABCD).to_bytes(2, "little") + _val((f"touch {marker}",)) + b"R."
    with pytest.raises(safe_pickle.RefusedError, match=r"ext\.pkl: refused.*calls os\.system"):
      safe_pickle.load(io.BytesIO(data), "ext.pkl")
  finally:
    copyreg.remove_extension("os", "system", 0xABCD)
  assert not marker.exists()


def test_convert_refuses_a_hostile_checkpoint_and_writes_nothing(tmp_path):
  marker = tmp_path / "payload_ran"
  src = _write(tmp_path / "resnet50_ft_weight.pkl", PAYLOADS["builtins.exec"](marker)[0])
  with pytest.raises(ValueError, match=r"resnet50_ft_weight\.pkl: refused.*builtins\.exec"):
    torch_convert.convert(str(src), tmp_path / "out")
  assert not marker.exists() and not (tmp_path / "out").exists()


def _tensor_pickle(offset, size, stride):
  """data.pkl of one float tensor over storage `0` (4 elements), as torch writes it."""
  storage = (b"(" + _val("storage") + _glob("torch", "FloatStorage") + _val("0") + _val("cpu")
             + _val(4) + b"tQ")
  return (b"\x80\x02" + _glob("torch._utils", "_rebuild_tensor_v2") + b"(" + storage
          + _val(offset) + _val(size) + _val(stride) + b"\x89"
          + _glob("collections", "OrderedDict") + b")RtR.")


def test_tensor_views_are_read_without_torch_and_kept_inside_their_storage(tmp_path):
  path = _write_zip(tmp_path / "t.pth", _tensor_pickle(1, (2, 2), (1, 1)))
  loaded = torch_files.load(path)
  np.testing.assert_array_equal(loaded, [[1, 2], [2, 3]])
  assert loaded.flags.writeable and loaded.flags.owndata
  # as_strided does not check bounds: a view past the storage would read foreign memory.
  for offset, size, stride in ((0, (5,), (1,)), (3, (2,), (1,)), (0, (2, 2), (3, 1)),
                               (-1, (2,), (1,)), (0, (2,), (-1,))):
    path = _write_zip(tmp_path / "bad.pth", _tensor_pickle(offset, size, stride))
    with pytest.raises(ValueError, match=r"bad\.pth: .*(reaches past|non-negative)"):
      torch_files.load(path)


def test_build_cannot_rewire_an_allowed_reconstructor():
  """BUILD sets attributes on the object below it; on a plain function that would replace its
  __defaults__ for every later load."""
  data = (b"\x80\x02" + _glob("torch._utils", "_rebuild_tensor_v2") + b"N"
          + _val({"__defaults__": (1,)}) + b"\x86b.")
  with pytest.raises(ValueError, match="evil.pkl: not a pickle of tensors"):
    safe_pickle.load(io.BytesIO(data), "evil.pkl")
  # numpy's shared float32 dtype stays what it is after a BUILD on an unpickled dtype.
  data = (b"\x80\x02" + _glob("numpy", "dtype") + _val(("f4", False, False)) + b"R"
          + _val((3, ">", None, None, None, -1, -1, 0)) + b"b.")
  assert safe_pickle.load(io.BytesIO(data), "d.pkl").str == ">f4"
  assert np.dtype("f4").str == "<f4"


# Real formats.


def _py2_str(b):
  return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + len(b).to_bytes(4, "little")) + b


def _py2_array(a):
  """An ndarray as numpy under Python 2 pickled it (protocol 2, str data, numpy.core names)."""
  return (_glob("numpy.core.multiarray", "_reconstruct") + _glob("numpy", "ndarray") + b"K\x00\x85"
          + _py2_str(b"b") + b"\x87R(K\x01" + _val(a.shape) + _glob("numpy", "dtype")
          + _py2_str(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"<")
          + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2_str(a.tobytes()) + b"tb")


def test_python2_vggface2_pickle_loads(tmp_path):
  """resnet50_ft_weight.pkl was written by Python 2: numpy.core names and str buffers."""
  rng = np.random.default_rng(0)
  arrays = {"conv1.weight": rng.normal(size=(8, 3, 7, 7)).astype(np.float32),
            "bn1.running_var": rng.uniform(size=8).astype(np.float32),
            "fc.bias": rng.normal(size=10).astype(np.float64)}
  data = (b"\x80\x02}(" + b"".join(_py2_str(k.encode()) + _py2_array(v) for k, v in arrays.items())
          + b"u.")
  loaded = torch_convert.read_checkpoint(str(_write(tmp_path / "resnet50_ft_weight.pkl", data)))
  assert loaded.keys() == arrays.keys()
  for k, v in arrays.items():
    assert loaded[k].dtype == v.dtype
    np.testing.assert_array_equal(loaded[k], v)


def _assert_same(loaded, state_dict):
  assert list(loaded) == list(state_dict)
  for k, v in state_dict.items():
    assert loaded[k].dtype == v.numpy().dtype and loaded[k].flags.writeable, k
    np.testing.assert_array_equal(loaded[k], v.numpy())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_of_a_resnet_state_dict_loads(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  from tests import torch_resnet

  state_dict = torch_resnet.make("resnet18", 7, width=8).state_dict()
  torch.save(state_dict, tmp_path / "r18.pth", _use_new_zipfile_serialization=zip_format)
  assert zipfile.is_zipfile(tmp_path / "r18.pth") == zip_format
  _assert_same(torch_files.load(tmp_path / "r18.pth"), state_dict)
  # Tensors sharing a storage, strided views, 0-d, half, bool, Parameters, plain values.
  base = torch.arange(24.0)
  extra = {"whole": base, "view": base[2:14].view(3, 4).t(), "scalar": torch.tensor(7),
           "half": torch.ones(3, dtype=torch.float16), "mask": torch.tensor([True, False]),
           "param": torch.nn.Parameter(torch.full((2,), 0.5)), "epoch": 12, "arch": "res18",
           "lr": [0.1, (0.01, None)]}
  torch.save(extra, tmp_path / "extra.pth", _use_new_zipfile_serialization=zip_format)
  loaded = torch_files.load(tmp_path / "extra.pth")
  for k in ("whole", "view", "scalar", "half", "mask", "param"):
    expected = extra[k].detach().numpy()
    assert loaded[k].shape == expected.shape and loaded[k].dtype == expected.dtype, k
    np.testing.assert_array_equal(loaded[k], expected)
  assert (loaded["epoch"], loaded["arch"], loaded["lr"]) == (12, "res18", [0.1, (0.01, None)])


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_msceleb_tar_checkpoint_with_nested_state_dict_loads(tmp_path, zip_format):
  """res18_naive.pth_MSceleb.tar: {'state_dict': {'module.<key>': tensor}}."""
  torch = pytest.importorskip("torch")
  from tests import torch_resnet

  state_dict = torch_resnet.make("resnet18", 1000, width=8).state_dict()
  src = tmp_path / "res18_naive.pth_MSceleb.tar"
  torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, src,
             _use_new_zipfile_serialization=zip_format)
  found = torch_convert.find_state_dict(torch_convert.read_checkpoint(str(src)), src)
  _assert_same(found, {k: v for k, v in state_dict.items()
                       if not k.endswith("num_batches_tracked")})


def test_vggface2_style_protocol_2_pickle_loads(tmp_path):
  pytest.importorskip("torch")
  from tests import torch_resnet

  state_dict = {k: v for k, v in torch_resnet.make("resnet50_caffe", 8631, width=8)
                .state_dict().items() if not k.endswith("num_batches_tracked")}
  src = tmp_path / "resnet50_ft_weight.pkl"
  with open(src, "wb") as f:
    pickle.dump({k: v.numpy() for k, v in state_dict.items()} | {"meta": (np.float64(2.5), b"")},
                f, protocol=2)
  loaded = torch_convert.read_checkpoint(str(src))
  assert loaded.pop("meta") == (2.5, b"")
  _assert_same(loaded, state_dict)


def test_landmark_tensor_loads(tmp_path):
  torch = pytest.importorskip("torch")
  points = np.random.default_rng(1).uniform(0, 224, (6, 19, 2)).astype(np.float32)
  torch.save(torch.from_numpy(points), tmp_path / "raf_train_19_landmarks.tensor")
  np.testing.assert_array_equal(
    landmark_files.load(tmp_path / "raf_train_19_landmarks.tensor", 6), points)


def test_hostile_object_inside_a_real_torch_save_is_refused(tmp_path):
  """torch.save pickles whatever it is given: a payload in a checkpoint's state_dict."""
  torch = pytest.importorskip("torch")
  marker = tmp_path / "payload_ran"
  src = tmp_path / "resnet18_msceleb.pth"
  torch.save({"state_dict": {"conv1.weight": torch.zeros(2, 3, 1, 1),
                             "fc.bias": _Call(subprocess.check_output, ["touch", str(marker)])}},
             src)
  with pytest.raises(ValueError, match=r"resnet18_msceleb\.pth: refused.*subprocess\.check_output"):
    torch_convert.convert(str(src), tmp_path / "out")
  assert not marker.exists() and not (tmp_path / "out").exists()
