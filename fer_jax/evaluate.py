r"""Evaluates a trained model on a split of its dataset: accuracy, mean class accuracy,
per-class recall, confusion matrix (CSV + PNG) and calibration (ECE, reliability diagram).

  python -m fer_jax.evaluate --checkpoint runs/ncct_syn30 [--split test|train] [--out DIR]
  python -m fer_jax.evaluate --checkpoint weights/my_raf_model \
      --config configs/baseline.py:raf_db --config.dataset.data_dir=$RAF

`--checkpoint` is a training workdir (its exported `model/` and its config.json are used) or
a model directory (then `--config` names the dataset). Labels are the dataset's own (clean)
labels on every split, in the model's class order. Writes to --out (default
<checkpoint>/eval_<split>; an existing directory is never overwritten): metrics.json,
confusion.csv, confusion_matrix.png, reliability.png.
"""

import csv
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from fer_jax import cli, predict, writers
from fer_jax.data import pipeline, sources


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


def probabilities(model, variables, meta, source, ops, batch_size=64):
  """(N, C) class probabilities and (N,) labels of every example of `source`."""
  probs = jax.jit(predict.probability_fn(model, variables, meta))
  out, labels = [], []
  for batch in pipeline.eval_batches(source, ops, batch_size):
    keep = batch["_mask"]
    out.append(np.asarray(probs(jnp.asarray(batch["image"])))[keep])
    labels.append(batch["label"][keep])
  return np.concatenate(out), np.concatenate(labels)


def evaluate(model, variables, meta, dataset, split, ops):
  """The metrics dict of `model` on `dataset`'s `split`."""
  if list(dataset.class_names) != list(meta["class_names"]):
    raise cli.UsageError(f"the model's classes {meta['class_names']} differ from the dataset's "
                         f"{list(dataset.class_names)} (set config.dataset.class_order)")
  probs, labels = probabilities(model, variables, meta, getattr(dataset, split), ops)
  num_classes = len(dataset.class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, probs.argmax(1)), 1)
  report = writers.classification_report(confusion)
  ece, bins = expected_calibration_error(probs, labels)
  return {"split": split, "num_examples": int(len(labels)), "accuracy": report["accuracy"],
          "mean_class_accuracy": report["mean_class_accuracy"],
          "per_class_recall": dict(zip(dataset.class_names, report["per_class_recall"])),
          "ece": ece, "reliability_bins": bins, "confusion": confusion.tolist(),
          "class_names": list(dataset.class_names)}


def write(result, out):
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
  import matplotlib  # noqa: PLC0415 (plotting is optional at import time)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
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


def load_config(checkpoint, config):
  """The run's config: `config` if given, else <checkpoint>/config.json."""
  if config is not None:
    return config
  return read_run_config(checkpoint, "; pass --config to name the dataset")


def read_run_config(workdir, hint=""):
  """The ConfigDict of a training workdir's config.json; cli.UsageError naming the file if it
  is missing or not JSON."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise cli.UsageError(f"{workdir}: no config.json (not a training workdir){hint}")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
    raise cli.UsageError(f"{path}: not a run's config ({e})") from e


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  out = f.out or pathlib.Path(f.checkpoint) / f"eval_{f.split}"
  if pathlib.Path(out).exists():  # checked before the work, not when writing
    raise cli.UsageError(f"{out} exists; choose another --out (results are never overwritten)")
  config = load_config(f.checkpoint, f.config)
  cli.check_dataset(config.dataset.name)
  model, variables, meta = predict.load_model(f.checkpoint)
  dataset = sources.in_class_order(sources.load(config.dataset), config.dataset)
  result = evaluate(model, variables, meta, dataset, f.split, config.input.eval_ops)
  write(result, out)
  print(f"{f.split}: accuracy {result['accuracy']:.4f}, mean class accuracy "
        f"{result['mean_class_accuracy']:.4f}, ECE {result['ece']:.4f}; wrote {out}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Training workdir or exported model directory.",
                      required=True)
  config_flags.DEFINE_config_file("config", None, "Config file[:arg] naming the dataset "
                                  "(default: the workdir's config.json).", lock_config=False)
  flags.DEFINE_enum("split", "test", ["train", "test"], "Which split to score.")
  flags.DEFINE_string("out", "", "Output directory (default <checkpoint>/eval_<split>).")
  cli.run(main)
