"""StableHLO export: the deserialized function gives inference's probabilities, any batch size."""

import json

import jax
import numpy as np
import pytest

from fer_jax import inference, stablehlo
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
