"""Metric writers: console, TensorBoard event files and a JSONL file, behind one interface.

clu's `metric_writers` cannot be imported without TensorFlow (docs/design.md), so this keeps
clu's writer interface (`write_scalars(step, dict)`, `flush`, `close`) over tensorboardX, which
writes TensorBoard files without TensorFlow. Only process 0 writes files.

Also the guards of every output a run writes: `check_space` before a write of known size, and
`write_atomically` (a temporary name, then a rename), so that a reader, or a disk that fills
up, never leaves half a file where a complete one was.
"""

import contextlib
import errno
import json
import logging
import os
import pathlib
import shutil

import jax
import numpy as np

from fer_jax import cli


def _mb(n):
  return f"{n / 2**20:.1f} MB"


def check_space(path, needed, what, kept):
  """Raises cli.NoSpace, naming `path`, `needed` bytes and what is `kept`, when the disk of
  `path` (or of its nearest existing parent) has less than `needed` bytes free."""
  free = shutil.disk_usage(_existing_parent(path)).free
  if free < needed:
    raise cli.NoSpace(f"{path}: {what} needs about {_mb(needed)} and the disk has {_mb(free)} "
                      f"free; {kept}; free space there and run the same command again")


@contextlib.contextmanager
def no_space_named(path, needed, what, kept):
  """Turns a full disk (ENOSPC) met inside the block into cli.NoSpace naming `path`."""
  try:
    yield
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    free = shutil.disk_usage(_existing_parent(path)).free
    raise cli.NoSpace(f"{path}: {what} needs about {_mb(needed)} and the disk filled up "
                      f"({_mb(free)} free); {kept}; free space there and run the same command "
                      "again") from e


def _existing_parent(path):
  where = pathlib.Path(path)
  while not where.exists():
    where = where.parent
  return where


def write_atomically(path, write, needed, what, kept="the earlier one is kept", displace=None):
  """Writes `path` (a file or a directory) by calling `write(temporary path)` and renaming the
  result over `path`: readers see the earlier `path` or the new one, never half of one. The
  disk is checked for `needed` bytes first, and a full disk met while writing removes the
  temporary and raises cli.NoSpace; either way `path` is left as it was. `displace(path)`, if
  given, moves an existing `path` away just before the rename (a directory cannot be renamed
  over a full one)."""
  path = pathlib.Path(path)
  check_space(path, needed, what, kept)
  tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # the suffix: the format
  try:
    with no_space_named(path, needed, what, kept):
      write(tmp)
  except BaseException:
    if tmp.is_dir():
      shutil.rmtree(tmp, ignore_errors=True)
    else:
      tmp.unlink(missing_ok=True)
    raise
  if displace is not None and path.exists():
    displace(path)
  tmp.replace(path)


class MetricWriter:
  """Appends to `<workdir>/metrics.jsonl`; a run resumed at `resume_step` first drops the rows
  logged after that step (the steps it trains again), so the file holds each step once. A full
  disk is cli.NoSpace naming the file."""

  _ROWS_BYTES = 64 * 1024  # the space asked for: a few log rows

  def __init__(self, workdir, resume_step=0):
    self._files = jax.process_index() == 0
    self._tb = self._jsonl = None
    if self._files:
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
      path = self._path = pathlib.Path(workdir) / "metrics.jsonl"
      if path.exists():
        rows = path.read_text().splitlines(keepends=True)
        kept = [r for r in rows if r.strip() and json.loads(r)["step"] <= resume_step]
        if len(kept) != len(rows):
          write_atomically(path, lambda tmp: tmp.write_text("".join(kept)),
                           len("".join(kept)) + self._ROWS_BYTES, "the metrics log",
                           "the earlier log and the checkpoints are kept")
      self._jsonl = open(path, "a")

  def _full_disk(self):
    return no_space_named(self._path, self._ROWS_BYTES, "the metrics log",
                          "the rows up to the newest checkpoint and the checkpoints are kept")

  def write_scalars(self, step, scalars):
    scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.5g}" for k, v in sorted(scalars.items())))
    if self._files:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      with self._full_disk():
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")

  def flush(self):
    if self._files:
      self._tb.flush()
      with self._full_disk():
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
