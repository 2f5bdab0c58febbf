"""Training run directories: a run's config, and mean ± std over the seeds of finished runs.

A run directory is a `python -m fer_jax.main` workdir: config.json from the start,
summary.json once it finished. Groups are (method, dataset, noise kind, noise rate or file);
the metrics are final accuracy, best accuracy (the max over epochs, NCCTFER/LA-Net's metric)
and the mean of the last 5 epochs (EAC/SCN's metric), each as mean ± std (population std over
seeds), in %.
"""

import collections
import json
import pathlib
import sys

import ml_collections
import numpy as np

from fer_jax import cli

METRICS = (("final_accuracy", "final"), ("best_accuracy", "best"),
           ("mean_last5_accuracy", "mean of last 5"))
# The method (config.method) the by-noise table takes margins over: the papers' baseline.
REFERENCE_METHOD = "ce"


def read_config(workdir, hint=""):
  """The ConfigDict of a training workdir's config.json; cli.UsageError naming the file if it
  is missing (`hint` says what to do instead) or not JSON."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise cli.UsageError(f"{workdir}: no config.json (not a training workdir){hint}")
  return ml_collections.ConfigDict(_read_json(path))


def load_runs(dirs):
  """[(group key, seed, summary)] of the finished runs among `dirs`; others are skipped with
  a note. A finished run whose config.json or summary.json is unreadable is a
  cli.UsageError naming the file."""
  runs = []
  for d in map(pathlib.Path, dirs):
    if not (d / "summary.json").exists():
      print(f"skipping {d}: no summary.json (unfinished?)", file=sys.stderr)
      continue
    config, summary = _read_json(d / "config.json"), _read_json(d / "summary.json")
    try:
      noise = config["noise"]
      key = (config["method"], config["dataset"]["name"], noise["kind"],
             noise["rate"] if noise["kind"] not in ("none", "file") else noise["file"])
      seed = config["seed"]
      for field, _ in METRICS:
        summary[field]  # checked here, where the file is known
    except (KeyError, TypeError) as e:
      raise cli.UsageError(f"{d}: config.json or summary.json lacks {e}; not a run directory "
                           "written by `python -m fer_jax.main`") from e
    runs.append((key, seed, summary))
  return runs


def _read_json(path):
  if not path.is_file():
    raise cli.UsageError(f"{path}: no such file (a finished run has config.json and "
                         "summary.json)")
  try:
    return json.loads(path.read_text())
  except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
    raise cli.UsageError(f"{path}: not valid JSON ({e})") from e


def groups(runs):
  """{(method, dataset, noise kind, rate or file): [(seed, summary)] by seed}, sorted."""
  grouped = collections.defaultdict(list)
  for key, seed, summary in runs:
    grouped[key].append((seed, summary))
  return {k: sorted(v, key=lambda m: m[0]) for k, v in sorted(grouped.items(), key=str)}


def mean_std(members):
  """[(mean, std)] in % over the seeds of a group, one pair per metric of METRICS."""
  values = [100 * np.array([s[field] for _, s in members]) for field, _ in METRICS]
  return [(v.mean(), v.std()) for v in values]


def noise_label(kind, rate):
  """How the tables name a noise setting: "clean", or the kind and its rate (or file)."""
  return "clean" if kind == "none" else f"{kind} {rate}"


def table(runs):
  """The Markdown table of `runs` (load_runs): a row per group, mean ± std per metric."""
  lines = ["| method | dataset | noise | seeds | " + " | ".join(n for _, n in METRICS) + " |",
           "| --- | --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
  for (method, dataset, kind, rate), members in groups(runs).items():
    cells = [f"{mean:.2f} ± {std:.2f}" for mean, std in mean_std(members)]
    seeds = ",".join(str(seed) for seed, _ in members)
    lines.append(f"| {method} | {dataset} | {noise_label(kind, rate)} | {seeds} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def noise_columns(runs, reference=REFERENCE_METHOD):
  """The Markdown table of `runs` (load_runs) with a row per (method, dataset): its seeds (one
  list, or one per noise setting where they differ) and, per noise setting, a column of final
  and a column of best accuracy (mean ± std over the seeds); the final accuracy of other
  methods carries its margin over `reference`'s mean on the same dataset and noise. Noise
  settings in the order they first appear in `runs`; `reference`'s rows first."""
  settings = list(dict.fromkeys(noise_label(*key[2:]) for key, _, _ in runs))
  by_method = collections.defaultdict(dict)
  for (method, dataset, kind, rate), members in groups(runs).items():
    by_method[(method, dataset)][noise_label(kind, rate)] = (
      ",".join(str(seed) for seed, _ in members), mean_std(members)[:2])
  header = "| method | dataset | seeds | " + " | ".join(f"{s} {m}" for s in settings
                                                        for m in ("final", "best")) + " |"
  lines = [header, "|" + " --- |" * (3 + 2 * len(settings))]
  for method, dataset in sorted(by_method, key=lambda k: (k[0] != reference, k)):
    row = by_method[(method, dataset)]
    seeds = {row[s][0] for s in settings if s in row}
    cells = [seeds.pop() if len(seeds) == 1
             else " / ".join(row[s][0] if s in row else "–" for s in settings)]
    for setting in settings:
      if setting not in row:
        cells += ["–", "–"]
        continue
      (final, final_std), (best, best_std) = row[setting][1]
      base = by_method.get((reference, dataset), {}).get(setting)
      margin = f" ({final - base[1][0][0]:+.1f})" if base and method != reference else ""
      cells += [f"{final:.2f} ± {final_std:.2f}{margin}", f"{best:.2f} ± {best_std:.2f}"]
    lines.append(f"| {method} | {dataset} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
