r"""Label audit: ranks every training sample of a run by how likely its given label is wrong.

  python -m fer_jax.audit --checkpoint runs/ncct_syn30 [--signal loss|margin|history] \
      [--out DIR] [--relabel_top K --labels_out FILE]

Signals (higher = more suspicious):
  loss               -log p(given label) under the trained model (eval transform)
  margin             the best other class's probability minus the given label's
  threshold          NCCTFER's confidence rule over the whole training set: T_y - clamp(p_y),
                     T_c = mean of clamp(p_c, 0.35, 0.65) (positive: non-confident)
  cam_inconsistency  EAC's flip inconsistency of the class activation maps
  history            LA-Net's estimated label distribution (the run's last checkpoint):
                     1 - t[given]
The suggested label is the most probable class (LA-Net's distribution for `history`, the
model's prediction otherwise).

Writes to --out (default <checkpoint>/audit_<signal>; never overwritten): audit.csv (rank,
name, given label, suggested label, its probability, score, and where the run's noise is
synthetic the clean label and whether the given one was flipped) and report.json (with
known flips: the precision of the top-K ranking, K = the number of flips, which equals its
recall; the ROC AUC of the score; how often the suggestion is the clean label).
`--relabel_top K --labels_out FILE` writes the training labels in the dataset's own label-file
format with the K most suspicious labels replaced by the suggestion. The library behind it is
fer_jax/analysis/label_audit.py.
"""

import csv
import json
import pathlib

from absl import flags

from fer_jax import cli
from fer_jax.analysis import label_audit
from fer_jax.data import label_noise
from fer_jax.experiments import workdirs


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  if f.relabel_top < 0:
    raise cli.UsageError(f"--relabel_top={f.relabel_top}: expected a count >= 0")
  if f.relabel_top and not f.labels_out:
    raise cli.UsageError("--relabel_top needs --labels_out (the label file to write)")
  if f.labels_out and pathlib.Path(f.labels_out).exists():
    raise cli.UsageError(f"--labels_out={f.labels_out} exists; choose another --labels_out")
  out = pathlib.Path(f.out or pathlib.Path(f.checkpoint) / f"audit_{f.signal}")
  if out.exists():  # an existing audit is never overwritten
    raise cli.UsageError(f"{out} exists; choose another --out")
  config = workdirs.read_config(f.checkpoint)
  cli.check_dataset(config.dataset.name)
  rows, report, own, given, suggested, order = label_audit.audit(f.signal, f.checkpoint, config)
  out.mkdir(parents=True)  # only now: a failed audit leaves no empty directory behind
  with open(out / "audit.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
  if f.labels_out:
    cleaned = label_audit.relabel_top(given, suggested, order, f.relabel_top)
    label_noise.write_label_file(f.labels_out, own.train.names, cleaned, own)
    print(f"wrote {f.labels_out}: {int((cleaned != given).sum())} labels changed")
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Training workdir.", required=True)
  flags.DEFINE_enum("signal", "loss", label_audit.SIGNALS, "What ranks the samples.")
  flags.DEFINE_string("out", "", "Output directory (default <checkpoint>/audit_<signal>).")
  flags.DEFINE_integer("relabel_top", 0, "Replace the labels of the K most suspicious samples.")
  flags.DEFINE_string("labels_out", "", "Write the (relabelled) training labels here.")
  cli.run(main)
