"""Metric writers: console, TensorBoard event files and a JSONL file, behind one interface.

clu's `metric_writers` cannot be imported without TensorFlow (docs/design.md), so this keeps
clu's writer interface (`write_scalars(step, dict)`, `flush`, `close`) over tensorboardX, which
writes TensorBoard files without TensorFlow. Only process 0 writes files.
"""

import json
import logging
import pathlib

import jax
import numpy as np


class MetricWriter:
  """Appends to `<workdir>/metrics.jsonl`; a run resumed at `resume_step` first drops the rows
  logged after that step (the steps it trains again), so the file holds each step once."""

  def __init__(self, workdir, resume_step=0):
    self._files = jax.process_index() == 0
    self._tb = self._jsonl = None
    if self._files:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
      path = pathlib.Path(workdir) / "metrics.jsonl"
      if path.exists():
        rows = path.read_text().splitlines(keepends=True)
        kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= resume_step]
        if len(kept) != len(rows):
          tmp = path.with_suffix(".jsonl.tmp")
          tmp.write_text("".join(kept))
          tmp.replace(path)
      self._jsonl = open(path, "a")

  def write_scalars(self, step, scalars):
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.5g}" for k, v in sorted(scalars.items())))
    if self._files:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")

  def flush(self):
    if self._files:
      self._tb.flush()
      self._jsonl.flush()

  def close(self):
    if self._files:
      self._tb.close()
      self._jsonl.close()


def classification_report(confusion):
  """Accuracy, mean class accuracy (mean recall) and per-class recall of a confusion matrix.

  Args:
    confusion: (K, K) counts, rows = true class, columns = predicted class.
  """
  confusion = np.asarray(confusion, np.float64)
  support = confusion.sum(1)
  recall = np.divide(np.diag(confusion), support, out=np.zeros(len(support)), where=support > 0)
  return {
    "accuracy": float(np.trace(confusion) / max(confusion.sum(), 1)),
    "mean_class_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
    "per_class_recall": recall.tolist(),
  }


_MAX_LABELLED_CLASSES = 20


def plot_confusion(confusion, class_names, path, title=""):
  """Saves a row-normalised confusion matrix with counts as a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  confusion = np.asarray(confusion)
  rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  k = len(class_names)
  labelled = k <= _MAX_LABELLED_CLASSES  # beyond that, cells too small to read: the image only
  side = 0.8 * min(k, _MAX_LABELLED_CLASSES)
  fig, ax = plt.subplots(figsize=(1 + side, side))
  ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  if labelled:
    for i in range(k):
      for j in range(k):
        ax.text(j, i, f"{rows[i, j]:.2f}\n({confusion[i, j]})", ha="center", va="center",
                fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def summarize(history, class_names, confusion):
  """summary.json contents from the per-epoch eval history and the final confusion matrix.

  The papers report the mean test accuracy of the last 5 epochs (eac.md §3) and the max.
  """
  accs = [h["accuracy"] for h in history]
  best = int(np.argmax(accs))
  return {
    "final_accuracy": accs[-1],
    "best_accuracy": accs[best],
    "best_epoch": history[best]["epoch"],
    "mean_last5_accuracy": float(np.mean(accs[-5:])),
    **{k: v for k, v in classification_report(confusion).items() if k != "accuracy"},
    "class_names": list(class_names),
    "confusion_matrix": np.asarray(confusion).astype(int).tolist(),
    "epochs": len(history),
    "history": history,
  }
