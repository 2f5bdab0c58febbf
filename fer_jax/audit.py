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
recall; the ROC AUC of the score; how often the suggestion is the clean label). `--relabel_top K --labels_out FILE` writes the training labels in the
dataset's own label-file format with the K most suspicious labels replaced by the suggestion.
"""

import csv
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

from fer_jax import cli, evaluate, noise, predict
from fer_jax.data import classes, pipeline, sources
from fer_jax.methods import eac, ncct

SIGNALS = ("loss", "margin", "threshold", "cam_inconsistency", "history")


def cam_inconsistency(model, variables, meta, source, ops, batch_size=64):
  """(N,) EAC's flip inconsistency per sample: mean squared difference between the class
  activation maps of the image and the flipped-back maps of its mirror image."""
  kernel = variables["params"]["head"]["kernel"]

  @jax.jit
  def per_sample(images):
    x = pipeline.to_model_input({"image": images}, meta["mean"], meta["std"])["image"]
    maps = [eac.class_activation_maps(model.apply(variables, v, train=False)[1]["stage4"], kernel)
            for v in (x, jnp.flip(x, 2))]
    return jnp.mean((maps[0] - jnp.flip(maps[1], 2)) ** 2, axis=(1, 2, 3))

  out = [np.asarray(per_sample(jnp.asarray(b["image"])))[b["_mask"]]
         for b in pipeline.eval_batches(source, ops, batch_size)]
  return np.concatenate(out)


def distributions(signal, checkpoint, model, variables, meta, train, ops):
  """(N, C) label distributions of the training samples, in the model's class order."""
  if signal in ("loss", "margin", "threshold", "cam_inconsistency"):
    probs, _ = evaluate.probabilities(model, variables, meta, train, ops)
    return probs
  if signal == "history":
    directory = pathlib.Path(checkpoint) / "checkpoints"
    manager = ocp.CheckpointManager(directory.absolute(), item_names=("state",))
    step = manager.latest_step()
    if step is None:
      raise cli.UsageError(f"{directory}: no checkpoint to read the label history from")
    extra = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]["state"]["extra"]
    if "history" not in extra:
      raise cli.UsageError(f"{checkpoint}: --signal=history needs a run that keeps a label history "
                           "(LA-Net); use --signal=loss or margin")
    history, visited = np.asarray(extra["history"]), np.asarray(extra["visited"])
    # A never-visited sample still has its one-hot given label.
    return np.where(visited[:, None], history, np.eye(history.shape[1])[train.labels])
  raise cli.UsageError(f"--signal={signal!r}: expected one of {SIGNALS}")


def scores(signal, dist, given):
  own = dist[np.arange(len(given)), given]
  if signal == "threshold":  # NCCTFER's rule over the whole training set: T_y - clamp(p_y)
    thresholds, clamped = ncct.class_thresholds(jnp.asarray(dist), jnp.asarray(given),
                                                "clamped_batch_mean")
    clamped = np.asarray(clamped)[np.arange(len(given)), given]
    return np.asarray(thresholds)[given] - clamped
  if signal == "margin":
    others = dist.copy()
    others[np.arange(len(given)), given] = -np.inf
    return others.max(1) - own
  if signal == "loss":
    return -np.log(np.maximum(own, 1e-12))
  return 1.0 - own


def roc_auc(score, positive):
  """Probability that a random positive outranks a random negative (ties count half)."""
  order = np.argsort(score, kind="stable")
  ranks = np.empty(len(score))
  ranks[order] = np.arange(1, len(score) + 1)
  for value in np.unique(score):  # average ranks of ties
    tie = score == value
    ranks[tie] = ranks[tie].mean()
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if not n_pos or not n_neg:
    return float("nan")
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def audit(signal, checkpoint, config):
  """(rows sorted by suspicion, report, dataset in its own class order, noisy labels)."""
  model, variables, meta = predict.load_model(checkpoint)
  own, _ = noise.apply(sources.load(config.dataset), config.noise, None)
  trained = sources.reorder(own, meta["class_names"])  # the model's class order
  train = trained.train
  dist = distributions(signal, checkpoint, model, variables, meta, train,
                       config.input.eval_ops)
  given = np.asarray(train.labels)
  if signal == "cam_inconsistency":
    if meta.get("neck", "pool") != "pool":
      raise cli.UsageError(f"{checkpoint}: --signal=cam_inconsistency needs class activation maps; "
                           "this model's head does not read a pooled feature")
    score = cam_inconsistency(model, variables, meta, train, config.input.eval_ops)
  else:
    score = scores(signal, dist, given)
  suggested = dist.argmax(1)
  order = np.argsort(-score, kind="stable")
  names = meta["class_names"]
  rows = []
  for rank, i in enumerate(order, 1):
    row = {"rank": rank, "name": train.names[i], "given": names[given[i]],
           "suggested": names[suggested[i]], "suggested_probability": float(dist[i, suggested[i]]),
           "score": float(score[i])}
    if train.clean_labels is not None:
      row.update(clean=names[train.clean_labels[i]],
                 flipped=bool(train.clean_labels[i] != given[i]))
    rows.append(row)
  report = {"signal": signal, "checkpoint": str(checkpoint), "num_train": len(given)}
  if train.clean_labels is not None:
    flipped = np.asarray(train.clean_labels) != given
    k = int(flipped.sum())
    top = np.zeros(len(given), bool)
    top[order[:k]] = True
    report.update(num_flipped=k, precision_at_k=float((top & flipped).sum() / max(k, 1)),
                  roc_auc=roc_auc(score, flipped),
                  suggestion_accuracy_on_flipped=float(
                    (suggested[flipped] == np.asarray(train.clean_labels)[flipped]).mean())
                  if k else float("nan"))
  # Labels back in the dataset's own class order, for its label-file format.
  own_names = [classes.canonical(n) for n in own.class_names]
  to_own = np.array([own_names.index(classes.canonical(n)) for n in names])
  return rows, report, own, to_own[given], to_own[suggested], order


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
  config = evaluate.read_run_config(f.checkpoint)
  cli.check_dataset(config.dataset.name)
  rows, report, own, given, suggested, order = audit(f.signal, f.checkpoint, config)
  out.mkdir(parents=True)  # only now: a failed audit leaves no empty directory behind
  with open(out / "audit.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
  if f.labels_out:
    cleaned = given.copy()
    cleaned[order[: f.relabel_top]] = suggested[order[: f.relabel_top]]
    noise.write_label_file(f.labels_out, own.train.names, cleaned, own)
    print(f"wrote {f.labels_out}: {int((cleaned != given).sum())} labels changed")
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Training workdir.", required=True)
  flags.DEFINE_enum("signal", "loss", SIGNALS, "What ranks the samples.")
  flags.DEFINE_string("out", "", "Output directory (default <checkpoint>/audit_<signal>).")
  flags.DEFINE_integer("relabel_top", 0, "Replace the labels of the K most suspicious samples.")
  flags.DEFINE_string("labels_out", "", "Write the (relabelled) training labels here.")
  cli.run(main)
