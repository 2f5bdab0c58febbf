"""Label audit: ranks the training samples of a run by how likely their given labels are wrong.

The signals (SIGNALS) and what they measure are listed in fer_jax/audit.py, the command. A
signal's score is higher for a more suspicious label; the suggested label is the most probable
class of the sample's distribution. Where the run's noise is synthetic, the report measures the
ranking against the known flips.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fer_jax import cli, expressions, inference
from fer_jax.data import label_noise, pipeline, sources
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
    probs, _ = inference.predict_source(model, variables, meta, train, ops)
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
  """(N,) suspicion of each given label under `signal`, from the (N, C) distributions."""
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
  """Audits the run in `checkpoint` (its training `config`) with `signal`.

  Returns:
    (rows sorted by suspicion, report, the dataset in its own class order with the run's noisy
    labels, the given and the suggested labels in that order, the sample indices from most to
    least suspicious).
  """
  model, variables, meta = inference.load_model(checkpoint)
  own, _ = label_noise.apply(sources.load(config.dataset), config.noise, None)
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
  own_names = [expressions.canonical(n) for n in own.class_names]
  to_own = np.array([own_names.index(expressions.canonical(n)) for n in names])
  return rows, report, own, to_own[given], to_own[suggested], order


def relabel_top(given, suggested, order, k):
  """`given` with the labels of the `k` most suspicious samples (`order`) replaced by the
  suggested ones."""
  cleaned = np.array(given, copy=True)
  cleaned[order[:k]] = suggested[order[:k]]
  return cleaned
