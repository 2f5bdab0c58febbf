r"""Evaluates a trained model on a split of its dataset: accuracy, mean class accuracy,
per-class recall, confusion matrix (CSV + PNG) and calibration (ECE, reliability diagram).

  python -m fer_jax.evaluate --checkpoint runs/ncct_syn30 [--split test|train] [--out DIR]
  python -m fer_jax.evaluate --checkpoint weights/my_raf_model \
      --config configs/baseline.py:raf_db --config.dataset.data_dir=$RAF

`--checkpoint` is a training workdir (its exported `model/` and its config.json are used) or
a model directory (then `--config` names the dataset). Labels are the dataset's own (clean)
labels on every split, in the model's class order. Writes to --out (default
<checkpoint>/eval_<split>; an existing directory is never overwritten): metrics.json,
confusion.csv, confusion_matrix.png, reliability.png. The library behind it is
fer_jax/analysis/evaluation.py.
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from fer_jax import cli, inference
from fer_jax.analysis import evaluation
from fer_jax.data import sources
from fer_jax.experiments import workdirs


def load_config(checkpoint, config):
  """The run's config: `config` if given, else <checkpoint>/config.json."""
  if config is not None:
    return config
  return workdirs.read_config(checkpoint, "; pass --config to name the dataset")


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  out = f.out or pathlib.Path(f.checkpoint) / f"eval_{f.split}"
  if pathlib.Path(out).exists():  # checked before the work, not when writing
    raise cli.UsageError(f"{out} exists; choose another --out (results are never overwritten)")
  config = load_config(f.checkpoint, f.config)
  cli.check_dataset(config.dataset.name)
  model, variables, meta = inference.load_model(f.checkpoint)
  dataset = sources.in_class_order(sources.load(config.dataset), config.dataset)
  result = evaluation.evaluate(model, variables, meta, dataset, f.split, config.input.eval_ops)
  evaluation.write(result, out)
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
