"""Label audit: ranking scores, detection metrics against known flips, cleaned label files."""

import numpy as np
import pytest

from fer_jax.analysis import label_audit
from fer_jax.data import label_noise


def test_roc_auc_and_scores_by_hand():
  score = np.array([0.9, 0.8, 0.3, 0.1, 0.8])
  flipped = np.array([True, False, True, False, True])
  # positives 0.9, 0.3, 0.8 vs negatives 0.8, 0.1: wins 2 + 0.5, 1 + 0, 2 (tie .5 -> 1.5)...
  pairs = [(p, n) for p in score[flipped] for n in score[~flipped]]
  expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
  assert label_audit.roc_auc(score, flipped) == pytest.approx(expected)
  dist = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
  given = np.array([0, 1])
  np.testing.assert_allclose(label_audit.scores("margin", dist, given), [-0.5, 0.3])
  np.testing.assert_allclose(label_audit.scores("loss", dist, given), -np.log([0.7, 0.3]))
  # NCCTFER's toy batch (ncct_scn_rul.md §8): T = (0.4625, 0.4875, 0.35); sample 1 is the
  # non-confident one, sample 3 ties.
  toy = np.array([[.9, .05, .05], [.3, .6, .1], [.2, .7, .1], [.5, .2, .3]], np.float32)
  np.testing.assert_allclose(label_audit.scores("threshold", toy, np.array([0, 0, 1, 2])),
                             [-0.1875, 0.1125, -0.1625, 0.0], atol=1e-6)


@pytest.mark.xdist_group("noisy_baseline_run")  # one worker computes the fixture once
def test_audit_of_a_noisy_run_scores_its_flips_and_writes_labels(noisy_baseline_run, tmp_path):
  config, run, _ = noisy_baseline_run
  rows, report, own, given, suggested, order = label_audit.audit("loss", run, config)
  assert len(rows) == report["num_train"] == len(own.train)
  assert [r["rank"] for r in rows[:3]] == [1, 2, 3]
  assert rows[0]["score"] >= rows[-1]["score"]
  assert report["num_flipped"] == sum(r["flipped"] for r in rows) > 0
  assert 0.0 <= report["precision_at_k"] <= 1.0 and 0.0 <= report["roc_auc"] <= 1.0
  # The given labels are the noisy ones the run trained on, in the dataset's own order.
  trained_on = np.load(run / "noise" / "labels.npz")
  np.testing.assert_array_equal(given, trained_on["noisy"])
  assert report["num_flipped"] == int(trained_on["flipped"].sum())
  cleaned = label_audit.relabel_top(given, suggested, order, 5)
  assert (cleaned != given).sum() <= 5 and (cleaned[order[5:]] == given[order[5:]]).all()
  label_noise.write_label_file(tmp_path / "labels.txt", own.train.names, cleaned, own)
  np.testing.assert_array_equal(label_noise.read_label_file(tmp_path / "labels.txt", own), cleaned)
  with pytest.raises(ValueError, match="needs a run that keeps a label history"):
    label_audit.audit("history", run, config)
  rows, report, *_ = label_audit.audit("cam_inconsistency", run, config)
  assert all(r["score"] >= 0 for r in rows) and report["signal"] == "cam_inconsistency"


@pytest.mark.xdist_group("lanet_run")  # one worker computes the fixture once
def test_lanet_history_is_an_audit_signal(lanet_run):
  config, workdir = lanet_run
  rows, report, *_ = label_audit.audit("history", workdir, config)
  assert report["signal"] == "history" and len(rows) == report["num_train"]
  assert all(0.0 <= r["suggested_probability"] <= 1.0 for r in rows)
