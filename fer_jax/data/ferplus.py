"""FERPlus: FER2013's 48x48 faces with Microsoft's 10 crowd votes per image.

`fer2013.csv` (Kaggle: emotion, pixels, Usage) holds the pixels; `fer2013new.csv`
(microsoft/FERPlus: Usage, Image name, 8 emotion vote counts, unknown, NF) holds the votes, row
for row. Usage Training / PublicTest / PrivateTest are our splits train / validation / test;
rows with an empty image name are not part of FERPlus and are left out, as Microsoft's
scripts do.

Labels come from the votes by Microsoft's rules (`vote_targets`): `majority` (the papers'
protocol: one-hot, rows without a clear majority dropped), `crossentropy` and `probability`
(the label distribution over the top emotions, as `soft_label`; losses train on the
distribution, and Microsoft's `probability` mode, a fresh one-hot draw from it each time the
sample is seen, is the host op `sample_label` put first in `config.input.train_ops`) and
`multi_target` (uniform over every emotion with at least 30% of the votes). The test split
always uses `majority`.
`num_classes=7` drops contempt (the EAC/LA-Net protocol); 8 keeps it (NCCTFER).
"""

import csv
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from fer_jax import cli, expressions
from fer_jax.data import prepared, sources

PIXELS_FILE, VOTES_FILE = "fer2013.csv", "fer2013new.csv"
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
VOTE_COLUMNS = (*expressions.FERPLUS, "unknown", "NF")
LABEL_MODES = ("majority", "crossentropy", "probability", "multi_target")
DEFAULTS = {**prepared.DEFAULTS, "label_mode": "majority", "num_classes": 7}
LAYOUT = f"""\
  <data_dir>/{PIXELS_FILE}      header emotion,pixels,Usage (Kaggle FER2013)
  <data_dir>/{VOTES_FILE}   header Usage,Image name,{",".join(VOTE_COLUMNS)} (microsoft/FERPlus)"""


def vote_targets(votes, mode):
  """Microsoft's FERPlus label rules, re-derived from their description.

  Args:
    votes: (N, 10) vote counts in `VOTE_COLUMNS` order.
    mode: one of LABEL_MODES.

  Returns:
    (targets (N, 8) float32 summing to 1 over the emotions, keep (N,) bool): rows whose target
    falls on unknown/NF, or that no rule accepts, are not kept (their target row is zero).
  """
  if mode not in LABEL_MODES:
    raise cli.UsageError(f"label_mode={mode!r}: expected one of {LABEL_MODES}")
  targets = np.zeros((len(votes), len(VOTE_COLUMNS)), np.float32)
  for n, row in enumerate(np.asarray(votes, np.float64)):
    v = np.where(row <= 1, 0.0, row)  # a lone vote is an outlier
    total = v.sum()
    t = targets[n]
    if mode == "majority":
      if v.max() > 0.5 * total:
        t[v.argmax()] = v.max()
    elif mode == "multi_target":
      t[:] = np.where(v >= 0.3 * total, v, 0.0)
      if t.sum() <= 0.5 * total:
        t[:] = 0
    else:
      # Take the emotions in order of votes (ties together) until 75% of the votes or 3
      # emotions are covered; a tie that reaches unknown/NF ends the list there.
      covered, count = 0.0, 0
      while covered < 0.75 * total and count < 3:
        top = v.max()
        stop = False
        for i in np.flatnonzero(v == top):
          t[i], v[i] = top, 0.0
          covered, count = covered + top, count + 1
          if i >= len(expressions.FERPLUS):
            stop = True
            if t.sum() > top:  # emotions came before it: keep them, not unknown/NF
              t[i], count = 0.0, count - 1
            break
        if stop:
          break
      if t.sum() <= 0.5 * total or count > 3:
        t[:] = 0
  keep = targets.any(1) & (targets.argmax(1) < len(expressions.FERPLUS))
  emotions = targets[:, : len(expressions.FERPLUS)]
  if mode == "multi_target":
    emotions = (emotions > 0).astype(np.float32)
  sums = emotions.sum(1, keepdims=True)
  return np.where(keep[:, None], emotions / np.where(sums > 0, sums, 1), 0.0), keep


class Ferplus(prepared.Builder):
  """FERPlus (train 28,558 / validation 3,579 / test 3,573 named rows before label rules)."""

  name = "fer_jax_ferplus"
  LAYOUT = LAYOUT
  SPLITS = ("train", "validation", "test")
  IMAGE_SHAPE = (48, 48, 1)

  def label_files(self, root):
    return [pathlib.Path(root) / PIXELS_FILE, pathlib.Path(root) / VOTES_FILE]

  def extra_features(self):
    return {"votes": tfds.features.Tensor(shape=(len(VOTE_COLUMNS),), dtype=np.int32)}

  def index_fields(self, row):
    return {"votes": row.fields["votes"].tolist()}

  def encode(self, row):
    pixels = np.asarray(row.fields["pixels"].split(), np.uint8).reshape(48, 48)
    return {"image": prepared.encode_png(pixels), "votes": row.fields["votes"]}

  def parse(self, root, split):
    if not hasattr(self, "_rows"):
      self._rows = _read(*self.label_files(root))
    return self._rows[split]


def _read(pixels_path, votes_path):
  """Rows per split from the two CSVs, checked to describe the same images in the same order."""
  rows = {split: [] for split in USAGE_TO_SPLIT.values()}
  with open(pixels_path, newline="") as pf, open(votes_path, newline="") as vf:
    pixels, votes = csv.reader(pf), csv.reader(vf)
    _check_header(pixels_path, next(pixels, None), ["emotion", "pixels", "Usage"])
    _check_header(votes_path, next(votes, None), ["Usage", "Image name", *VOTE_COLUMNS])
    for number, (p, v) in enumerate(zip(pixels, votes, strict=False), 2):
      where = f"{votes_path}, line {number}"
      if len(p) != 3 or len(v) != 2 + len(VOTE_COLUMNS):
        raise prepared.DataError(f"{where} / {pixels_path}, line {number}: expected 3 and "
                                 f"{2 + len(VOTE_COLUMNS)} columns, got {len(p)} and {len(v)}")
      if p[2] != v[0]:
        raise prepared.DataError(f"{where}: Usage {v[0]!r} but {p[2]!r} in {pixels_path}; the "
                                 "two files must list the same images in the same order")
      if v[0] not in USAGE_TO_SPLIT:
        raise prepared.DataError(f"{where}: Usage {v[0]!r}: expected one of "
                                 f"{sorted(USAGE_TO_SPLIT)}")
      if not v[1].strip():
        continue
      if not all(c.strip().isdigit() for c in v[2:]):
        raise prepared.DataError(f"{where}: vote counts {v[2:]}: expected non-negative integers")
      values = p[1].split()
      if len(values) != 48 * 48 or not all(x.isdigit() and int(x) < 256 for x in values):
        raise prepared.DataError(f"{pixels_path}, line {number}: expected 2304 pixel values "
                                 "0..255 separated by spaces")
      row_votes = np.asarray([int(c) for c in v[2:]], np.int32)
      majority, keep = vote_targets(row_votes[None], "majority")
      label = int(majority.argmax()) if keep[0] else -1
      rows[USAGE_TO_SPLIT[v[0]]].append(
        prepared.Row(v[1].strip(), label, None, {"votes": row_votes, "pixels": p[1]}))
    leftover = next(pixels, None) or next(votes, None)
    if leftover is not None:
      raise prepared.DataError(f"{pixels_path} and {votes_path} have different numbers of rows; "
                               "expected the same images in the same order")
  return rows


def _check_header(path, header, expected):
  if header != expected:
    raise prepared.DataError(f"{path}, line 1: header {header}: expected {expected}")


def load(config):
  """FERPlus as a `sources.Dataset` in FERPlus class order (contempt last, dropped for 7).

  Fields of `config`: data_dir, label_mode, num_classes (7 | 8), prepared_dir, cache_dir,
  corrupt_images, train_split (e.g. "train+validation"), test_split.
  """
  if config.num_classes not in (7, 8):
    raise cli.UsageError(f"config.dataset.num_classes={config.num_classes}: expected 7 or 8")
  builder = prepared.open_builder(Ferplus, config)
  class_names = expressions.FERPLUS[: config.num_classes]

  def split(name, mode):
    targets, keep = vote_targets(prepared.split_index(builder, name)["votes"], mode)
    targets = targets[:, : config.num_classes]
    rows = np.flatnonzero(keep & (targets.sum(1) > 0))  # 7 classes: contempt rows go
    soft = targets[rows] / targets[rows].sum(1, keepdims=True)
    return prepared.labelled(builder, name, soft.argmax(1), rows,
                             None if mode == "majority" else soft.astype(np.float32))

  return sources.Dataset("ferplus", class_names, split(config.train_split, config.label_mode),
                         split(config.test_split, "majority"), source=str(config.data_dir))
