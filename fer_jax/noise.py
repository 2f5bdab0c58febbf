"""Synthetic label noise on training labels, the papers' protocols, and noisy label files.

Kinds (test labels are never touched):
  symmetric         with probability `rate`, the label becomes a uniformly random *other*
                    class (EAC, LA-Net, SCN: the realised rate is about `rate`, not
                    rate*(C-1)/C).
  asymmetric_lanet  with probability `rate`, the label becomes its partner in LA-Net's map.
  asymmetric_ncct   the same with NCCTFER's map. Maps are by class name, so they apply to any
                    dataset's class order; a class without a partner keeps its label.
  file              the labels of a noisy label file (e.g. EAC's noise01.txt), checked to list
                    the clean train list's images in the same order.

Draws follow LA-Net's procedure: Python's `random.Random(seed)`, one coin per label in file
order, and for a symmetric flip `(label + randint(1, C-1)) % C`, so seed 0 on RAF-DB flips
exactly the samples LA-Net flips (lanet.md §7).

As a command, writes noisy training labels in the dataset's own label-file format:
  python -m fer_jax.noise --dataset raf_db --data_dir DIR --kind symmetric --rate 0.3 \
    --seed 0 --out noise03.txt
"""

import csv
import dataclasses
import json
import pathlib
import random

import ml_collections
import numpy as np
from absl import flags

from fer_jax import cli
from fer_jax.data import classes, prepared, sources

KINDS = ("none", "symmetric", "asymmetric_lanet", "asymmetric_ncct", "file")
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


def partner_map(kind, class_names):
  """(C,) int: the class index each class flips to under `kind`; itself where it has none."""
  names = [classes.canonical(n) for n in class_names]
  pairs = ASYMMETRIC_MAPS[kind]
  return np.array([names.index(pairs[n]) if pairs.get(n) in names else i
                   for i, n in enumerate(names)], np.int32)


def corrupt(labels, class_names, kind, rate, seed):
  """Noisy copy of `labels` (ints in 0..C-1) under `kind` in {symmetric, asymmetric_*}."""
  if not 0.0 <= rate <= 1.0:
    raise cli.UsageError(f"noise rate {rate}: expected a probability in [0, 1]")
  num_classes = len(class_names)
  partner = partner_map(kind, class_names) if kind != "symmetric" else None
  draw = random.Random(seed)
  noisy = np.array(labels, np.int32)
  for i, label in enumerate(noisy):
    if draw.random() < rate:
      if partner is None:
        noisy[i] = (label + draw.randint(1, num_classes - 1)) % num_classes
      else:
        noisy[i] = partner[label]
  return noisy


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
  return {**settings, "num_train": int(len(clean)), "flipped": int(flipped.sum()),
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
  """Raises cli.UsageError unless `config` (config.noise: kind, rate, file) is usable; reads
  no data, so runs can check it before loading a dataset."""
  cli.check_name(config.kind, KINDS, "config.noise.kind")
  if config.kind == "file":
    if not config.file:
      raise cli.UsageError("config.noise.kind='file' needs config.noise.file (a noisy label "
                           "file in the dataset's format)")
    if not pathlib.Path(config.file).expanduser().is_file():
      raise cli.UsageError(f"config.noise.file={config.file}: no such file")
  elif config.kind != "none" and not 0.0 <= config.rate <= 1.0:
    raise cli.UsageError(f"config.noise.rate={config.rate}: expected a probability in [0, 1]")


def noisy_labels(dataset, config):
  """The training labels `config` (kind, rate, seed, file) asks for, and its report."""
  check_config(config)
  clean = dataset.train.labels
  if config.kind == "file":
    noisy = read_label_file(pathlib.Path(config.file).expanduser(), dataset)
    settings = {"kind": "file", "file": str(config.file)}
  else:
    noisy = corrupt(clean, dataset.class_names, config.kind, config.rate, config.seed)
    settings = {"kind": config.kind, "rate": config.rate, "seed": config.seed}
    if config.kind != "symmetric":
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


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  if f.kind in ("none", "file"):
    raise cli.UsageError(f"--kind={f.kind}: expected a synthetic kind, one of {KINDS[1:4]}")
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
  config = ml_collections.ConfigDict(dict(kind=f.kind, rate=f.rate, seed=f.seed, file=""))
  out = pathlib.Path(f.out)
  report_path = out.with_name(out.name + ".report.json")
  for path in (out, report_path):
    if path.exists():
      raise cli.UsageError(f"{path} exists; not overwritten")
  dataset = sources.load(dataset_config)
  noisy, summary = noisy_labels(dataset, config)
  write_label_file(out, dataset.train.names, noisy, dataset)
  report_path.write_text(json.dumps(summary, indent=2) + "\n")
  print(f"{out}: {summary['flipped']} of {summary['num_train']} training labels changed "
        f"(realised {summary['realised_rate']:.4f}, requested {f.rate}); report {report_path}")


if __name__ == "__main__":
  flags.DEFINE_string("dataset", None, "dataset name (fer_jax/data/<name>.py)", required=True)
  flags.DEFINE_string("data_dir", "", "your copy of the dataset (config.dataset.data_dir)")
  flags.DEFINE_enum("kind", None, list(KINDS[1:4]), "noise kind", required=True)
  flags.DEFINE_float("rate", None, "probability that a label is changed", required=True)
  flags.DEFINE_integer("seed", 0, "noise seed")
  flags.DEFINE_string("out", None, "label file to write (never overwritten)", required=True)
  flags.DEFINE_multi_string("dataset_field", [], "other config.dataset fields, key=value "
                            "(e.g. num_classes=8)")
  cli.run(main)
