"""ONNX export: onnxruntime's probabilities are fer_jax's, at any batch size, without JAX."""

import json
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import inference
from fer_jax.deploy import onnx_export
from fer_jax.inference import faces
from fer_jax.models import resnet, weights

pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")

# The script a user runs: jax, Flax and fer_jax cannot be imported in its process.
WITHOUT_JAX = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in ("jax", "jaxlib", "flax", "fer_jax"):
      raise ImportError(f"{name} may not be imported here")
sys.meta_path.insert(0, Refuse())
import json, numpy as np, onnxruntime
model, images, out = sys.argv[1:]
meta = json.load(open(model + ".json"))
session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
assert json.loads(session.get_modelmeta().custom_metadata_map["fer_jax"]) == meta
np.save(out, session.run(None, {meta["input"]["name"]: np.load(images)})[0])
"""


def _model_dir(path, neck="pool", width=8, size=32):
  """A ResNet-18 model directory whose probabilities are far from uniform (random BatchNorm
  statistics, a scaled head): a fresh model's are all near 1/7, which would hide errors."""
  model = resnet.Classifier("resnet18", 7, width, neck=neck)
  variables = flax.core.unfreeze(model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  rng = np.random.default_rng(1)
  stats = flax.traverse_util.flatten_dict(variables["batch_stats"])
  variables["batch_stats"] = flax.traverse_util.unflatten_dict({
    k: rng.normal(0, 0.2, v.shape) if k[-1] == "mean" else rng.uniform(0.5, 2, v.shape)
    for k, v in stats.items()})
  variables["params"]["head"]["kernel"] = variables["params"]["head"]["kernel"] * 8
  weights.save(path, variables, {
    "arch": "resnet18", "width": width, "num_classes": 7, "class_names": list("abcdefg"),
    "image_size": size, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "has_head": True,
    "neck": neck})
  return path


def _exported(tmp_path, **model):
  """(want, images, model file): JAX's probabilities of 5 random images, and the written
  ONNX model of the same model."""
  model, variables, meta = inference.load_model(_model_dir(tmp_path / "model", **model))
  size = meta["image_size"]
  images = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), np.uint8)
  want = np.asarray(jax.jit(inference.probability_fn(model, variables, meta))(images))
  assert want.max() > 0.6  # far from uniform: a wrong graph shows
  proto = onnx_export.export(model, variables, meta)
  assert onnx_export.check(proto, model, variables, meta) <= onnx_export.TOLERANCE
  onnx_export.write(proto, tmp_path / "m.onnx")
  return want, images, tmp_path / "m.onnx"


def _max_difference(session, images, want):
  """Over the whole batch and over batch 1 (the batch dimension is dynamic)."""
  got = session.run(None, {"images": images})[0]
  first = session.run(None, {"images": images[:1]})[0]
  assert got.shape == want.shape and first.shape == (1, want.shape[1])
  return max(np.abs(got - want).max(), np.abs(first - want[:1]).max())


@pytest.mark.parametrize("neck", ["pool", "uncertainty"])
def test_onnxruntime_gives_fer_jax_probabilities(tmp_path, neck):
  want, images, path = _exported(tmp_path, neck=neck)
  assert _max_difference(onnx_export.session(path), images, want) <= 1e-4
  sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
  assert sidecar["class_names"] == list("abcdefg") and sidecar["image_size"] == 32
  assert sidecar["input"] == {"name": "images", "shape": ["batch", 32, 32, 3], "dtype": "uint8",
                              "layout": "NHWC", "channels": "RGB"}
  assert sidecar["mean"] == [0.5, 0.4, 0.3] and sidecar["std"] == [0.25, 0.2, 0.3]
  crop = sidecar["face_crop"]
  np.testing.assert_allclose(crop["points"], faces.template(crop["size"]), atol=1e-4)
  with pytest.raises(FileExistsError, match="exists"):
    onnx_export.write(onnx_export.export(*inference.load_model(tmp_path / "model")), path)


def test_real_width(tmp_path):
  want, images, path = _exported(tmp_path, width=64, size=112)
  assert _max_difference(onnx_export.session(path), images, want) <= 1e-4


def test_runs_with_onnxruntime_alone(tmp_path):
  want, images, path = _exported(tmp_path)
  np.save(tmp_path / "images.npy", images)
  subprocess.run([sys.executable, "-I", "-c", WITHOUT_JAX, str(path), str(tmp_path / "images.npy"),
                  str(tmp_path / "got.npy")], check=True, timeout=120, cwd=tmp_path)
  assert np.abs(np.load(tmp_path / "got.npy") - want).max() <= 1e-4


def test_missing_extra_is_named(monkeypatch):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import fails as when not installed
  with pytest.raises(onnx_export.cli.UsageError, match=r"jax2onnx.*\[onnx\]"):
    onnx_export.require()


def test_command_writes_onnx_and_refuses_an_existing_output(tmp_path):
  directory = _model_dir(tmp_path / "model")
  command = [sys.executable, "-m", "fer_jax.export", f"--checkpoint={directory}",
             "--format=onnx"]
  done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  assert "wrote model.onnx" in done.stdout and (tmp_path / "model.onnx.json").exists()
  again = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
  assert again.returncode == 2 and "model.onnx exists" in again.stderr
  assert len(again.stderr.strip().splitlines()) == 1, again.stderr
