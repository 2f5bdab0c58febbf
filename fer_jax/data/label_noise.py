"""Synthetic label noise on training labels, the papers' protocols, and noisy label files.

Kinds (test labels are never touched):
  symmetric         with probability `rate`, the label becomes a uniformly random *other*
                    class (EAC, LA-Net, SCN: the realised rate is about `rate`, not
                    rate*(C-1)/C).
  asymmetric_lanet  with probability `rate`, the label becomes its partner in LA-Net's map.
  asymmetric_ncct   the same with NCCTFER's map. Maps are by class name, so they apply to any
                    dataset's class order; a class without a partner keeps its label.
  instance          instance-dependent noise (IDN) as Chen et al. (AAAI 2021, "Beyond
                    class-conditional assumption") make it: a CE model trained on the clean
                    labels gives each training sample the mean over its epochs of its softmax;
                    the round(N * rate) samples whose highest wrong-class mean probability is
                    highest take that class (`instance_dependent`). The model is a finished CE
                    run that recorded the mean (config.ce.record_train_probabilities; its
                    PREDICTIONS_FILE), named by config.noise.predictions.
  file              the labels of a noisy label file (e.g. EAC's noise01.txt), checked to list
                    the clean train list's images in the same order.

Draws follow LA-Net's procedure: Python's `random.Random(seed)`, one coin per label in file
order, and for a symmetric flip `(label + randint(1, C-1)) % C`, so seed 0 on RAF-DB flips
exactly the images LA-Net flips (lanet.md §7). LA-Net adds the offset in its own class order
(anger, disgust, fear, happiness, sadness, surprise, neutral), so the new class of a flipped
image differs from one drawn in RAF-DB's order; `order="lanet"` adds it in LA-Net's order and
gives LA-Net's noisy labels exactly. The default, "", adds it in the dataset's own order.
"""

import csv
import dataclasses
import json
import pathlib
import random

import numpy as np

from fer_jax import cli, expressions, writers
from fer_jax.data import prepared

KINDS = ("none", "symmetric", "asymmetric_lanet", "asymmetric_ncct", "instance", "file")
# What a CE run with config.ce.record_train_probabilities writes into its workdir when it ends.
PREDICTIONS_FILE = "train_probabilities.npz"
ASYMMETRIC_MAPS = {
  # lanet.md §4 (dataloader.py, class-dependent noise), plus contempt -> neutral for 8 classes.
  "asymmetric_lanet": {"anger": "disgust", "disgust": "anger", "fear": "surprise",
                       "happiness": "neutral", "sadness": "neutral", "surprise": "anger",
                       "neutral": "sadness", "contempt": "neutral"},
  # ncct_scn_rul.md §6 (paper text; the only difference from LA-Net's is anger's partner).
  "asymmetric_ncct": {"surprise": "anger", "fear": "surprise", "disgust": "anger",
                      "happiness": "neutral", "sadness": "neutral", "anger": "happiness",
                      "neutral": "sadness"},
}
# The class orders a symmetric flip counts its offset in: "" the dataset's own; "lanet"
# LA-Net's, which its code remaps RAF-DB's labels to before it draws the noise.
ORDERS = {"": None, "lanet": expressions.LANET}


def partner_map(kind, class_names):
  """(C,) int: the class index each class flips to under `kind`; itself where it has none."""
  names = [expressions.canonical(n) for n in class_names]
  pairs = ASYMMETRIC_MAPS[kind]
  return np.array([names.index(pairs[n]) if pairs.get(n) in names else i
                   for i, n in enumerate(names)], np.int32)


def check_order(order, what="noise order"):
  """Raises cli.UsageError unless `order` names one of ORDERS; `what` names the flag or field."""
  if order not in ORDERS:
    raise cli.UsageError(f"{what}={order!r}: expected '' (the dataset's own class order) or "
                         + " or ".join(repr(name) for name in ORDERS if name))


def draw_order(class_names, order):
  """(C,) int: the index of each class of `class_names` in the class order `order` (ORDERS)."""
  check_order(order)
  names = [expressions.canonical(n) for n in class_names]
  if ORDERS[order] is None:
    return np.arange(len(names))
  if sorted(names) != sorted(ORDERS[order]):
    raise cli.UsageError(f"noise order {order!r} counts in the classes {ORDERS[order]}; this "
                         f"dataset's are {list(class_names)}")
  return np.array([ORDERS[order].index(n) for n in names])


def corrupt(labels, class_names, kind, rate, seed, order=""):
  """Noisy copy of `labels` (ints in 0..C-1) under `kind` in {symmetric, asymmetric_*};
  a symmetric flip adds its offset in the class order `order` (ORDERS)."""
  if not 0.0 <= rate <= 1.0:
    raise cli.UsageError(f"noise rate {rate}: expected a probability in [0, 1]")
  num_classes = len(class_names)
  if kind == "symmetric":
    position = draw_order(class_names, order)
    at = np.argsort(position)  # the class at each position of the order
  else:
    partner = partner_map(kind, class_names)
  draw = random.Random(seed)
  noisy = np.array(labels, np.int32)
  for i, label in enumerate(noisy):
    if draw.random() < rate:
      if kind == "symmetric":
        noisy[i] = at[(position[label] + draw.randint(1, num_classes - 1)) % num_classes]
      else:
        noisy[i] = partner[label]
  return noisy


def instance_dependent(labels, probabilities, rate):
  """Noisy copy of `labels` (N,) under the instance-dependent protocol of Chen et al. (AAAI
  2021; their generation scripts, github.com/chenpf1025/IDN): each sample's candidate is the
  class of its highest mean probability other than its label, its score that probability; the
  round(N * rate) highest scores take their candidate. `probabilities`: (N, C) mean softmax of a
  CE model trained on `labels`. Equal scores go to the lower index first (a stable sort); the
  code truncates int(rate * N) instead of rounding, which is one sample fewer where the float
  product falls just below an integer (0.29 * 100 = 28.999...)."""
  if not 0.0 <= rate <= 1.0:
    raise cli.UsageError(f"noise rate {rate}: expected a probability in [0, 1]")
  labels = np.asarray(labels, np.int32)
  wrong = np.array(probabilities, np.float64)
  wrong[np.arange(len(labels)), labels] = -np.inf
  candidate, score = wrong.argmax(1), wrong.max(1)
  chosen = np.argsort(-score, kind="stable")[:round(len(labels) * rate)]
  noisy = labels.copy()
  noisy[chosen] = candidate[chosen]
  return noisy


def write_train_probabilities(workdir, probabilities, epochs, dataset):
  """Writes <workdir>/PREDICTIONS_FILE: `probabilities` (N, C), row i the mean softmax of
  `dataset.train`'s example i (in the split's order, named by `names`), columns in
  `dataset.class_names`' order (`class_names`), over `epochs` epochs; `clean` says whether the
  run trained on the labels as given."""
  probabilities = np.asarray(probabilities, np.float32)
  path = pathlib.Path(workdir) / PREDICTIONS_FILE

  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, probabilities=probabilities, class_names=np.array(dataset.class_names),
               names=np.array(dataset.train.names), epochs=np.int32(epochs),
               clean=dataset.train.clean_labels is None)

  writers.write_atomically(path, write, probabilities.nbytes + 64 * len(probabilities) + 4096,
                           PREDICTIONS_FILE, "the checkpoints are kept")


def predictions_file(workdir, data="<data>"):
  """<workdir>/PREDICTIONS_FILE; cli.UsageError naming what is missing where it is not there,
  and the run (on dataset `data`) that writes it."""
  workdir = pathlib.Path(workdir).expanduser()
  if not workdir.is_dir():
    raise cli.UsageError(f"{workdir}: no such run directory (the CE run whose averaged "
                         "predictions instance-dependent noise reads)")
  path = workdir / PREDICTIONS_FILE
  if not path.is_file():
    raise cli.UsageError(
      f"{workdir} has no {PREDICTIONS_FILE}: a CE run on the clean labels with "
      "config.ce.record_train_probabilities=True writes it when it finishes: python -m "
      f"fer_jax.main --config configs/baseline.py:{data},record_train_probabilities=true "
      f"--workdir {workdir}")
  return path


def read_train_probabilities(workdir, dataset):
  """(N, C) mean training probabilities of the CE run in `workdir`, columns in `dataset`'s own
  class order (matched by name), checked to be of `dataset.train`'s examples in its order and
  of a run on the labels as given.

  Raises:
    cli.UsageError naming the workdir or file and what differs.
  """
  path = predictions_file(workdir)
  with np.load(path) as saved:
    probabilities, names = saved["probabilities"], [str(n) for n in saved["names"]]
    classes, clean = [str(n) for n in saved["class_names"]], bool(saved["clean"])
  have = [expressions.canonical(n) for n in classes]
  want = [expressions.canonical(n) for n in dataset.class_names]
  if sorted(have) != sorted(want):
    raise cli.UsageError(f"{path}: the model's classes {classes} are not the dataset's "
                         f"{list(dataset.class_names)}")
  expected = list(dataset.train.names)
  if len(names) != len(expected):
    raise cli.UsageError(f"{path}: predictions of {len(names)} training examples; the dataset "
                         f"has {len(expected)} (a CE run on the same training split is needed)")
  differ = next((i for i, (a, b) in enumerate(zip(names, expected)) if a != b), None)
  if differ is not None:
    raise cli.UsageError(f"{path}: training example {differ} is {names[differ]!r}, the "
                         f"dataset's is {expected[differ]!r} (a CE run on the same training "
                         "split is needed)")
  if not clean:
    raise cli.UsageError(f"{path}: that run trained on noisy labels; the protocol's model "
                         "trains on the labels as given")
  return probabilities[:, [have.index(n) for n in want]]


def report(clean, noisy, class_names, settings):
  """Requested vs realised rate, the clean -> noisy count matrix, and flips per class."""
  num_classes = len(class_names)
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (clean, noisy), 1)
  flipped = clean != noisy
  per_class = {}
  for c, name in enumerate(class_names):
    total = int(matrix[c].sum())
    per_class[name] = {
      "clean_count": total, "noisy_count": int(matrix[:, c].sum()),
      "flipped": int(total - matrix[c, c]),
      "flip_rate": float((total - matrix[c, c]) / total) if total else 0.0,
      "flipped_to": {class_names[d]: int(matrix[c, d]) for d in range(num_classes)
                     if d != c and matrix[c, d]},
    }
  return {**settings, "num_train": len(clean), "flipped": int(flipped.sum()),
          "realised_rate": float(flipped.mean()) if len(clean) else 0.0,
          "class_names": list(class_names), "transition_matrix": matrix.tolist(),
          "per_class": per_class}


# --- label files ---------------------------------------------------------------------------
def format_label(label, dataset):
  if dataset.label_format == "one_based":
    return str(label + 1)
  if dataset.label_format == "zero_based":
    return str(label)
  return dataset.class_names[label]


def write_label_file(path, names, labels, dataset):
  """Writes labels in `dataset`'s own format; never overwrites an existing file."""
  with open(path, "x", newline="") as f:
    if dataset.label_format == "class_name":
      writer = csv.writer(f, lineterminator="\n")
      writer.writerow(["path", "label"])
      writer.writerows((n, format_label(int(y), dataset)) for n, y in zip(names, labels))
    else:
      f.writelines(f"{n} {format_label(int(y), dataset)}\n" for n, y in zip(names, labels))


def read_label_file(path, dataset):
  """Labels from a label file that lists `dataset.train`'s images, in the same order.

  Raises:
    DataError naming the line of any name that differs from the clean list, any label out of
    range, or a different number of rows.
  """
  expected = dataset.train.names
  entries = _read_entries(path, dataset.label_format)
  labels = []
  for k, (name, label, where) in enumerate(entries):
    if k >= len(expected):
      raise prepared.DataError(f"{where}: more rows than the {len(expected)} training images")
    if name != expected[k]:
      raise prepared.DataError(f"{where}: {name!r}, expected {expected[k]!r}: a noisy label "
                               "file lists the clean train list's images in the same order")
    labels.append(_parse_label(label, dataset, where))
  if len(labels) != len(expected):
    raise prepared.DataError(f"{path}: {len(labels)} rows, expected one per training image "
                             f"({len(expected)})")
  return np.array(labels, np.int32)


def _read_entries(path, label_format):
  with open(path, newline="") as f:
    if label_format == "class_name":
      reader = csv.reader(f)
      header = next(reader, None)
      if header != ["path", "label"]:
        raise prepared.DataError(f"{path}, line 1: header {header}: expected ['path', 'label']")
      return [(*row, f"{path}, line {n}") if len(row) == 2 else _bad_row(path, n, row)
              for n, row in enumerate(reader, 2) if row]
    rows = []
    for n, line in enumerate(f, 1):
      if line.strip():
        fields = line.rsplit(maxsplit=1)
        rows.append((*fields, f"{path}, line {n}") if len(fields) == 2
                    else _bad_row(path, n, line.strip()))
    return rows


def _bad_row(path, number, row):
  raise prepared.DataError(f"{path}, line {number}: expected '<name> <label>', got {row!r}")


def _parse_label(text, dataset, where):
  num_classes = len(dataset.class_names)
  if dataset.label_format == "class_name":
    if text not in dataset.class_names:
      raise prepared.DataError(f"{where}: label {text!r}: expected one of "
                               f"{list(dataset.class_names)}")
    return dataset.class_names.index(text)
  first = 1 if dataset.label_format == "one_based" else 0
  if not text.isdigit() or not first <= int(text) < first + num_classes:
    raise prepared.DataError(f"{where}: label {text!r}: expected {first}..{first + num_classes - 1}")
  return int(text) - first


# --- applying a config ---------------------------------------------------------------------
def check_config(config):
  """Raises cli.UsageError unless `config` (config.noise: kind, rate, file, order,
  predictions) is usable; reads no data, so runs can check it before loading a dataset."""
  cli.check_name(config.kind, KINDS, "config.noise.kind")
  check_order(config.order, "config.noise.order")
  if config.kind == "file":
    if not config.file:
      raise cli.UsageError("config.noise.kind='file' needs config.noise.file (a noisy label "
                           "file in the dataset's format)")
    if not pathlib.Path(config.file).expanduser().is_file():
      raise cli.UsageError(f"config.noise.file={config.file}: no such file")
  elif config.kind != "none" and not 0.0 <= config.rate <= 1.0:
    raise cli.UsageError(f"config.noise.rate={config.rate}: expected a probability in [0, 1]")
  if config.kind == "instance":
    predictions = config.get("predictions", "")
    if not predictions:
      raise cli.UsageError("config.noise.kind='instance' needs config.noise.predictions (the "
                           "workdir of a finished CE run with config.ce.record_train_"
                           "probabilities=True; argument noise_predictions=DIR)")
    predictions_file(predictions)


def noisy_labels(dataset, config):
  """The training labels `config` (kind, rate, seed, file, order, predictions) asks for, and
  its report."""
  check_config(config)
  clean = dataset.train.labels
  if config.kind == "file":
    noisy = read_label_file(pathlib.Path(config.file).expanduser(), dataset)
    settings = {"kind": "file", "file": str(config.file)}
  elif config.kind == "instance":
    probabilities = read_train_probabilities(config.predictions, dataset)
    noisy = instance_dependent(clean, probabilities, config.rate)
    settings = {"kind": "instance", "rate": config.rate,
                "predictions": str(pathlib.Path(config.predictions).expanduser().absolute())}
  else:
    order = config.order
    noisy = corrupt(clean, dataset.class_names, config.kind, config.rate, config.seed, order)
    settings = {"kind": config.kind, "rate": config.rate, "seed": config.seed}
    if config.kind == "symmetric" and order:
      settings["order"] = order
    elif config.kind != "symmetric":
      partner = partner_map(config.kind, dataset.class_names)
      settings["map"] = {n: dataset.class_names[p] for n, p in zip(dataset.class_names, partner)}
  return noisy, report(clean, noisy, dataset.class_names, settings)


def apply(dataset, config, out_dir=None):
  """`dataset` with the noisy training labels of `config`, and the noise report.

  With `out_dir`, writes there (once) the labels used, `train_labels.*` in the dataset's
  format, `labels.npz` (names, clean, noisy, flipped) and `report.json`. If they already exist
  (a resumed run) they must describe the same labels: a run never trains on other labels than
  the ones it saved.
  """
  if config.kind == "none":
    return dataset, {"kind": "none"}
  noisy, summary = noisy_labels(dataset, config)
  if out_dir is not None:
    out_dir = pathlib.Path(out_dir)
    saved = out_dir / "labels.npz"
    if saved.exists():
      before = np.load(saved)["noisy"]
      if not np.array_equal(before, noisy):
        raise cli.UsageError(f"{saved} holds other noisy labels than config.noise gives now "
                             f"({int((before != noisy).sum())} differ); use a new --workdir")
    else:
      out_dir.mkdir(parents=True, exist_ok=True)
      suffix = ".csv" if dataset.label_format == "class_name" else ".txt"
      write_label_file(out_dir / f"train_labels{suffix}", dataset.train.names, noisy, dataset)
      (out_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
      np.savez(out_dir / "labels.npz", names=np.array(dataset.train.names),
               clean=dataset.train.labels, noisy=noisy, flipped=noisy != dataset.train.labels)
  return dataclasses.replace(dataset, train=dataset.train.with_labels(noisy)), summary


