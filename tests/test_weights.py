"""Model directories that do not fit their model: user errors naming the file and the tensor."""

import re

import jax
import numpy as np
import pytest

from fer_jax import cli, inference
from fer_jax.models import weights
from tests.test_explain import _model_dir


def _rewrite(directory, change):
  """Rewrites the model directory's variables.npz with `change` applied to its flat dict."""
  path = directory / weights.VARIABLES
  with np.load(path) as f:
    flat = {k: f[k] for k in f.files}
  change(flat)
  np.savez(path, **flat)
  return path


def test_a_missing_or_misshaped_tensor_names_the_file_and_the_tensor(tmp_path):
  directory = _model_dir(tmp_path)
  inference.load_model(directory)  # fits as written
  missing = "batch_stats/backbone/layer3_1/bn2/var"
  path = _rewrite(directory, lambda flat: flat.pop(missing))
  with pytest.raises(cli.UsageError, match=re.escape(f"{path}: does not fit")) as error:
    inference.load_model(directory)
  assert f"missing {missing} (32,)" in str(error.value)
  kernel = "params/head/kernel"
  _rewrite(directory, lambda flat: flat.update({missing: np.ones(32), kernel: np.zeros((64, 2))}))
  with pytest.raises(cli.UsageError, match=re.escape(f"{kernel}: shape (64, 2), model expects")):
    inference.load_model(directory)
  (directory / weights.VARIABLES).write_bytes(b"not a zip")
  with pytest.raises(cli.UsageError, match=re.escape(f"{path}: unreadable")):
    weights.load(directory)


def test_init_from_weights_of_another_shape_is_a_user_error(tmp_path):
  from configs import baseline
  from fer_jax import optim, train
  from fer_jax.methods import ce

  config = baseline.get_config("runlocal=true")
  config.model.width = 16  # the model directory's ResNet-18 has width 8
  config.init_from = str(_model_dir(tmp_path))
  model = ce.build_model(config)
  tx = optim.make(config.optimizer, 10, 100)[0]
  with pytest.raises(cli.UsageError, match="variables.npz: does not fit the model") as error:
    train.create_state(config, model, tx, ce, 10, jax.random.key(0), None)
  assert str(tmp_path / "m" / weights.VARIABLES) in str(error.value)
  assert "params/backbone/conv1/kernel: shape (7, 7, 3, 8), model expects (7, 7, 3, 16)" in str(
    error.value)
