r"""Writes noisy training labels in the dataset's own label-file format: the label-noise
protocols of fer_jax/data/label_noise.py (kinds, seeds and LA-Net's draws are described there).

  python -m fer_jax.noise --dataset raf_db --data_dir DIR --kind symmetric --rate 0.3 \
    --seed 0 --out noise03.txt [--order lanet]

`--order lanet` counts a symmetric flip's new class in LA-Net's class order, as LA-Net's code
does: seed 0 on RAF-DB then gives LA-Net's noisy labels exactly (the default, the dataset's own
order, flips the same images to other classes). Also writes <out>.report.json.

Instance-dependent noise reads the averaged training predictions of a finished CE run on the
clean labels (its workdir; the run is not started here, its command is named when missing):

  python -m fer_jax.main --config configs/baseline.py:raf_db,record_train_probabilities=true \
    --config.dataset.data_dir=DIR --workdir runs/raf_ce_clean
  python -m fer_jax.noise --dataset raf_db --data_dir DIR --kind instance --rate 0.3 \
    --checkpoint runs/raf_ce_clean --out raf_idn03.txt
"""

import json
import pathlib

import ml_collections
from absl import flags

from fer_jax import cli
from fer_jax.data import label_noise, sources


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  label_noise.check_order(f.order, "--order")
  cli.check_dataset(f.dataset, "--dataset")
  dataset_config = sources.default_config(f.dataset, data_dir=f.data_dir)
  for item in f.dataset_field:
    key, sep, value = item.partition("=")
    if not sep:
      raise cli.UsageError(f"--dataset_field {item}: expected key=value")
    if key not in dataset_config:
      raise cli.UsageError(f"--dataset_field {item}: {f.dataset} has no field {key!r}; "
                           + cli.unknown_name_hint(key, sorted(dataset_config), "its fields are"))
    kind = type(dataset_config[key])
    try:
      dataset_config[key] = (value.lower() in ("1", "true", "yes") if kind is bool
                             else kind(value))
    except ValueError as e:
      what = {int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
      raise cli.UsageError(f"--dataset_field {item}: expected {what}") from e
  if not 0.0 <= f.rate <= 1.0:  # before the dataset, which may take minutes to prepare
    raise cli.UsageError(f"--rate={f.rate}: expected a probability in [0, 1]")
  if (f.kind == "instance") != bool(f.checkpoint):
    raise cli.UsageError("--checkpoint DIR (a CE run's workdir) goes with --kind instance, "
                         "and only with it")
  if f.checkpoint:
    label_noise.predictions_file(f.checkpoint, f.dataset)
  config = ml_collections.ConfigDict({"kind": f.kind, "rate": f.rate, "seed": f.seed, "file": "",
                                      "order": f.order, "predictions": f.checkpoint})
  out = pathlib.Path(f.out)
  report_path = out.with_name(out.name + ".report.json")
  for path in (out, report_path):
    if path.exists():
      raise cli.UsageError(f"{path} exists; not overwritten")
  dataset = sources.load(dataset_config)
  noisy, summary = label_noise.noisy_labels(dataset, config)
  label_noise.write_label_file(out, dataset.train.names, noisy, dataset)
  report_path.write_text(json.dumps(summary, indent=2) + "\n")
  print(f"{out}: {summary['flipped']} of {summary['num_train']} training labels changed "
        f"(realised {summary['realised_rate']:.4f}, requested {f.rate}); report {report_path}")


if __name__ == "__main__":
  flags.DEFINE_string("dataset", None, "dataset name (fer_jax/data/<name>.py)", required=True)
  flags.DEFINE_string("data_dir", "", "your copy of the dataset (config.dataset.data_dir)")
  flags.DEFINE_enum("kind", None, list(label_noise.KINDS[1:5]), "noise kind",
                    required=True)
  flags.DEFINE_float("rate", None, "probability that a label is changed", required=True)
  flags.DEFINE_integer("seed", 0, "noise seed")
  flags.DEFINE_string("order", "", "class order of a symmetric flip's offset: '' the "
                      "dataset's own, lanet LA-Net's (its exact noisy labels)")
  flags.DEFINE_string("checkpoint", "", "--kind instance: the workdir of a finished CE run on "
                      "the clean labels that recorded its averaged training predictions")
  flags.DEFINE_string("out", None, "label file to write (never overwritten)", required=True)
  flags.DEFINE_multi_string("dataset_field", [], "other config.dataset fields, key=value "
                            "(e.g. num_classes=8)")
  cli.run(main)
