"""Scoring a model on a split of its dataset: accuracy, mean class accuracy, per-class recall,
confusion matrix and calibration (ECE, reliability diagram), and the report files."""

import csv
import json
import pathlib

import numpy as np

from fer_jax import cli, inference, writers


def expected_calibration_error(probs, labels, bins=15):
  """ECE over `bins` equal-width confidence bins, and the per-bin (confidence, accuracy, count)."""
  confidence = probs.max(1)
  correct = probs.argmax(1) == labels
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    inside = which == b
    if inside.any():
      conf, acc = confidence[inside].mean(), correct[inside].mean()
      ece += inside.mean() * abs(conf - acc)
      table.append((float(conf), float(acc), int(inside.sum())))
  return float(ece), table


def evaluate(model, variables, meta, dataset, split, ops):
  """The metrics dict of `model` on `dataset`'s `split`."""
  if list(dataset.class_names) != list(meta["class_names"]):
    raise cli.UsageError(f"the model's classes {meta['class_names']} differ from the dataset's "
                         f"{list(dataset.class_names)} (set config.dataset.class_order)")
  probs, labels = inference.predict_source(model, variables, meta, getattr(dataset, split),
                                           ops)
  num_classes = len(dataset.class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, probs.argmax(1)), 1)
  report = writers.classification_report(confusion)
  ece, bins = expected_calibration_error(probs, labels)
  return {"split": split, "num_examples": len(labels), "accuracy": report["accuracy"],
          "mean_class_accuracy": report["mean_class_accuracy"],
          "per_class_recall": dict(zip(dataset.class_names, report["per_class_recall"])),
          "ece": ece, "reliability_bins": bins, "confusion": confusion.tolist(),
          "class_names": list(dataset.class_names)}


def write(result, out):
  """Writes `result` (evaluate) into the new directory `out`: metrics.json, confusion.csv,
  confusion_matrix.png, reliability.png; FileExistsError if `out` exists."""
  out = pathlib.Path(out)
  out.mkdir(parents=True)  # refuses an existing directory: nothing is overwritten
  (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
  with open(out / "confusion.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["true \\ predicted", *result["class_names"]])
    for name, row in zip(result["class_names"], result["confusion"]):
      w.writerow([name, *row])
  writers.plot_confusion(result["confusion"], result["class_names"], out / "confusion_matrix.png",
                         f"{result['split']}: accuracy {result['accuracy']:.4f}")
  import matplotlib  # plotting is optional at import time
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(4, 4))
  if result["reliability_bins"]:
    conf, acc, _ = zip(*result["reliability_bins"])
    ax.plot(conf, acc, "o-", label=f"model (ECE {result['ece']:.3f})")
  ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
  ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / "reliability.png", dpi=120)
  plt.close(fig)
