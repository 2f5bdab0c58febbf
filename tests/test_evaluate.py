"""evaluation: metrics of a trained run match its own last evaluation; ECE; no overwrite."""

import json

import numpy as np
import pytest

from fer_jax import inference
from fer_jax.analysis import evaluation
from fer_jax.data import sources
from fer_jax.experiments import workdirs


def test_expected_calibration_error_by_hand():
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
  labels = np.array([0, 1, 0, 1])
  ece, bins = evaluation.expected_calibration_error(probs, labels, bins=10)
  # bins: 0.9 (2 samples, acc 0.5), 0.6 (1, acc 1), 0.7 (1, acc 1)
  np.testing.assert_allclose(ece, 0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3)
  assert [count for _, _, count in bins] == [1, 1, 2]


@pytest.mark.xdist_group("noisy_baseline_run")  # one worker computes the fixture once
def test_evaluating_a_run_reproduces_its_final_accuracy(noisy_baseline_run, tmp_path):
  _, run, summary = noisy_baseline_run
  run_config = workdirs.read_config(run)
  model, variables, meta = inference.load_model(run)
  dataset = sources.in_class_order(sources.load(run_config.dataset), run_config.dataset)
  result = evaluation.evaluate(model, variables, meta, dataset, "test", run_config.input.eval_ops)
  assert result["accuracy"] == pytest.approx(summary["final_accuracy"])
  assert np.sum(result["confusion"]) == len(dataset.test) == result["num_examples"]
  assert 0.0 <= result["ece"] <= 1.0 and set(result["per_class_recall"]) == set(dataset.class_names)
  evaluation.write(result, tmp_path / "eval_test")
  saved = json.loads((tmp_path / "eval_test" / "metrics.json").read_text())
  assert saved["accuracy"] == result["accuracy"]
  for name in ("confusion.csv", "confusion_matrix.png", "reliability.png"):
    assert (tmp_path / "eval_test" / name).exists()
  with pytest.raises(FileExistsError):
    evaluation.write(result, tmp_path / "eval_test")
  train_result = evaluation.evaluate(model, variables, meta, dataset, "train",
                                   run_config.input.eval_ops)
  assert train_result["num_examples"] == len(dataset.train)
