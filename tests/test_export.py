"""StableHLO export: the deserialized function gives inference's probabilities, any batch size;
it stays the command's default format."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from fer_jax import inference
from fer_jax.deploy import stablehlo
from tests.test_explain import _model_dir


def test_exported_model_runs_without_the_training_code(tmp_path):
  model, variables, meta = inference.load_model(_model_dir(tmp_path))
  exported = stablehlo.export(model, variables, meta)
  stablehlo.write(exported, meta, tmp_path / "m.jaxexport")
  run = jax.export.deserialize(bytearray((tmp_path / "m.jaxexport").read_bytes()))
  sidecar = json.loads((tmp_path / "m.jaxexport.json").read_text())
  assert sidecar["class_names"] == ["a", "b", "c"] and set(sidecar["platforms"]) == {"cpu", "cuda"}
  images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), np.uint8)
  x = (images / 255.0 - 0.5) / 0.25
  want = jax.nn.softmax(model.apply(variables, x.astype(np.float32), train=False)[0], -1)
  np.testing.assert_allclose(run.call(images), want, atol=1e-5)
  assert run.call(images[:2]).shape == (2, 3)  # another batch size, no re-export
  with pytest.raises(FileExistsError):
    stablehlo.write(exported, meta, tmp_path / "m.jaxexport")


def test_command_defaults_to_stablehlo_in_model_jaxexport(tmp_path):
  directory = _model_dir(tmp_path)
  done = subprocess.run([sys.executable, "-m", "fer_jax.export", f"--checkpoint={directory}"],
                        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "wrote model.jaxexport" in done.stdout
  run = jax.export.deserialize(bytearray((tmp_path / "model.jaxexport").read_bytes()))
  assert run.call(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 3)
  assert json.loads((tmp_path / "model.jaxexport.json").read_text())["class_names"] == list("abc")
