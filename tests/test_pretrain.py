"""Landmark pretraining: reads no expression label, learns, and seeds any method's backbone."""

import json

import jax
import numpy as np

from configs import ncct as ncct_config
from configs import pretrain_landmarks
from fer_jax import optim, train
from fer_jax.methods import ncct
from fer_jax.models import weights


def test_landmark_pretraining_exports_a_backbone_that_methods_start_from(tmp_path):
  config = pretrain_landmarks.get_config("runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.progress_bar = False
  config.num_epochs = 4
  config.optimizer.lr = 3e-3
  train.train_and_evaluate(config, tmp_path / "pre")
  logged = map(json.loads, (tmp_path / "pre/metrics.jsonl").read_text().splitlines())
  mse = [x["train_landmark_mse"] for x in logged if "train_landmark_mse" in x]
  assert mse[-1] < 0.5 * mse[0]  # it learns where the landmarks are
  variables, meta = weights.load(tmp_path / "pre/model")
  assert set(variables["params"]) == {"backbone"} and not meta["has_head"]

  method = ncct_config.get_config("synthetic,runlocal=true")
  method.init_from = str(tmp_path / "pre/model")
  method.dataset.cache_dir = str(tmp_path / "cache")
  model = ncct.build_model(method)
  tx = optim.make(method.optimizer, 10, 100)[0]
  state = train.create_state(method, model, tx, ncct, 96, jax.random.key(0), None)
  np.testing.assert_array_equal(state.params["backbone"]["conv1"]["kernel"],
                                variables["params"]["backbone"]["conv1"]["kernel"])
  assert set(state.params) == {"backbone", "head", "negative_head"}
