"""A grid of training runs: methods x noise settings x seeds from a grid spec, run as
subprocesses of `python -m fer_jax.main`, then the tables and plots of the finished runs.

The spec's fields, the workdir names and the files written are described in fer_jax/grid.py,
the command.
"""

import csv
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys

import numpy as np
from absl import logging

from fer_jax import cli
from fer_jax.experiments import workdirs

# The runs other runs read, which finish before any of those starts and stay out of the
# tables: the pretraining (its model/ is every run's init_from) and the CE run on the clean
# labels whose averaged predictions make the instance-dependent noise (its workdir is every
# `instance:<rate>` run's noise_predictions).
PRETRAIN, NOISE_MODEL = "pretrain", "instance_noise_model"


def load_spec(path_and_arg):
  """The grid spec ConfigDict of `path[:arg]`."""
  path, _, arg = str(path_and_arg).partition(":")
  spec = importlib.util.spec_from_file_location("grid_spec", path)
  if spec is None or not pathlib.Path(path).is_file():
    raise cli.UsageError(f"--grid {path}: no such grid spec file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise cli.UsageError(f"{path}, line {e.lineno}: {e.msg}") from e
  if not callable(getattr(module, "get_config", None)):
    raise cli.UsageError(f"{path}: a grid spec defines get_config(arg) (module docstring of "
                         "fer_jax/grid.py)")
  try:
    config = module.get_config(arg or None)
  except ValueError as e:  # the spec's own check of its argument
    raise cli.UsageError(f"--grid {path_and_arg}: {e}") from e
  for field in ("data", "methods", "noise", "seeds"):
    if field not in config:
      raise cli.UsageError(f"{path}: the grid spec has no `{field}` (module docstring of "
                           "fer_jax/grid.py lists the fields)")
  return config


def config_names(directory="configs"):
  """The run configs under `directory`: files that define get_config."""
  return [p.stem for p in sorted(pathlib.Path(directory).glob("*.py"))
          if cli.defines(p, "get_config")]


def check_configs(spec):
  """Raises cli.UsageError, before anything runs, for a grid without runs or naming a method
  (or pretraining) that has no config file under configs/."""
  for field in ("methods", "noise", "seeds"):
    if not len(spec[field]):
      raise cli.UsageError(f"the grid spec's `{field}` is empty: the grid has no runs")
  wanted = [("methods", m) for m in spec.methods]
  if spec.get("pretrain"):
    wanted.append(("pretrain", spec.pretrain.partition(":")[0]))
  for field, name in wanted:
    if not pathlib.Path(f"configs/{name}.py").is_file():
      raise cli.UsageError(f"grid spec {field}: {name!r} has no config configs/{name}.py; "
                           + cli.unknown_name_hint(name, config_names()))


def noise_args(setting, root=None):
  """(config-argument suffix, workdir tag) of a noise setting; an instance-dependent one reads
  the predictions of <root>/NOISE_MODEL."""
  kind, _, value = setting.partition(":")
  if kind == "none" and not value:
    return "", "clean"
  if kind == "file" and value:
    return f",noise_file={value}", "file-" + pathlib.Path(value).stem
  try:
    rate = float(value)
  except ValueError:
    rate = -1.0
  if not 0 < rate < 1:
    raise cli.UsageError(f"grid noise setting {setting!r}: expected 'none', "
                         "'<kind>:<rate in (0, 1)>' or 'file:<path>'")
  suffix = f",noise={rate},noise_kind={kind}"
  if kind == "instance":
    suffix += f",noise_predictions={pathlib.Path(root or '.') / NOISE_MODEL}"
  return suffix, f"{kind}{rate:g}"


def shown(cmd):
  """`cmd` as a user types it: `python`, not this interpreter's path."""
  return shlex.join(["python", *cmd[1:]])


def run_command(config_arg, workdir, overrides):
  cmd = [sys.executable, "-m", "fer_jax.main", "--config", config_arg,
         "--config.progress_bar=False", f"--workdir={workdir}"]
  return cmd + [f"--config.{k}={v}" for k, v in sorted(overrides.items())]


def plan(spec, root):
  """[(workdir, command)] of every run: the pretraining first, then the instance-dependent
  noise's CE run (where a setting needs it: configs/baseline.py on the clean labels, seed 0,
  with the grid's overrides and the baseline's own), then the grid."""
  check_configs(spec)
  root = pathlib.Path(root)
  overrides = dict(spec.get("overrides", ()))
  per_method = dict(spec.get("method_overrides", ()))
  runs = []
  if spec.get("pretrain"):
    pre = root / PRETRAIN
    name, _, arg = spec.pretrain.partition(":")
    runs.append((pre, run_command(f"configs/{name}.py" + (f":{arg}" if arg else ""), pre, {})))
    overrides["init_from"] = str(pre / "model")
  if any(setting.partition(":")[0] == "instance" for setting in spec.noise):
    model = root / NOISE_MODEL
    runs.append((model, run_command(
      f"configs/baseline.py:{spec.data},record_train_probabilities=true", model,
      {**overrides, **dict(per_method.get("baseline", ())), "seed": 0})))
  # Seed by seed, so that a grid stopped half-way has complete seeds for every method.
  for setting in spec.noise:
    suffix, tag = noise_args(setting, root)
    for seed in spec.seeds:
      for method in spec.methods:
        workdir = root / f"{method}_{tag}_s{seed}"
        own = dict(per_method.get(method, ()))
        runs.append((workdir, run_command(f"configs/{method}.py:{spec.data}{suffix}", workdir,
                                          {**overrides, **own, "seed": seed})))
  return runs


def execute(runs, root, jobs=1):
  """Runs what is not finished, up to `jobs` at a time after the pretraining; returns the
  workdirs that failed. Several jobs share the devices: each process then allocates device
  memory as it needs it instead of JAX's default 75% up front."""
  env = dict(os.environ)
  if jobs > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  todo = []
  for workdir, cmd in runs:
    if (workdir / "summary.json").exists():
      logging.info("done already: %s", workdir)
    else:
      todo.append((workdir, cmd))
  failed, running = [], []

  def wait_one():
    workdir, process, out = running.pop(0)
    code = process.wait()
    out.close()
    if code:
      logging.error("%s failed (exit %d); its log: %s.log", workdir, code, workdir)
      failed.append(workdir)

  with open(pathlib.Path(root) / "commands.sh", "a") as log:
    for workdir, cmd in todo:
      # The runs read the pretraining's export and the noise model's predictions: each
      # finishes before any later run starts.
      while running and (len(running) >= jobs or running[0][0].name in (PRETRAIN, NOISE_MODEL)):
        wait_one()
      workdir.parent.mkdir(parents=True, exist_ok=True)
      log.write(shown(cmd) + "\n")
      log.flush()
      logging.info("running %s", shlex.join(cmd))
      out = open(f"{workdir}.log", "a")  # noqa: SIM115 (closed by wait_one)
      running.append((workdir, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                env=env), out))
    while running:
      wait_one()
  return failed


def grid_workdirs(runs):
  """The workdirs of `runs` that the tables count: all but the pretraining and noise model."""
  return [w for w, _ in runs if w.name not in (PRETRAIN, NOISE_MODEL)]


def write_tables(runs, root):
  """results.md and results.csv from the finished runs of the grid; returns the Markdown."""
  root = pathlib.Path(root)
  finished = workdirs.load_runs(grid_workdirs(runs))
  commands = "\n".join(shown(cmd) for _, cmd in runs)
  by_noise = ""
  if len({key[2:] for key, _, _ in finished}) > 1:
    margins = (", the final's margin over CE in brackets"
               if any(key[0] == workdirs.REFERENCE_METHOD for key, _, _ in finished) else "")
    by_noise = (f"\nFinal and best accuracy by noise setting{margins}:\n\n"
                + workdirs.noise_columns(finished))
  text = (workdirs.table(finished) + by_noise
          + f"\nCommands (`python -m fer_jax.grid` runs each once):\n\n```bash\n{commands}\n```\n")
  (root / "results.md").write_text(text)
  with open(root / "results.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["method", "dataset", "noise", "rate", "seeds",
                     *[f"{name}_{stat}" for field, name in workdirs.METRICS
                       for stat in ("mean", "std")]])
    for key, members in workdirs.groups(finished).items():
      stats = [f"{x:.4f}" for pair in workdirs.mean_std(members) for x in pair]
      writer.writerow([*key, " ".join(str(seed) for seed, _ in members), *stats])
  return text


def flip_panels(runs):
  """[(title, clean, noisy)] of each noise setting of `runs`, from the noise/labels.npz of its
  first run that wrote one (every method of a setting trains on the same labels), and the
  class names."""
  panels, seen, class_names = [], set(), None
  for workdir in grid_workdirs(runs):
    saved = workdir / "noise" / "labels.npz"
    if not saved.exists():
      continue
    report = json.loads((workdir / "noise" / "report.json").read_text())
    title = " ".join(str(report[k]) for k in ("kind", "rate", "file") if k in report)
    if title in seen:
      continue
    seen.add(title)
    with np.load(saved) as labels:
      panels.append((title, labels["clean"], labels["noisy"]))
    class_names = report["class_names"]
  return panels, class_names


def plot_flip_matrices(panels, class_names, path):
  """Draws, side by side, each panel's (title, clean, noisy) per-class flip matrix: row c the
  training samples of clean class c, column d the share of them labelled d (in %; the diagonal,
  the labels kept, in grey)."""
  import matplotlib  # plotting is optional at import time
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  num_classes = len(class_names)
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.6, 4.4),
                           squeeze=False)
  for ax, (title, clean, noisy) in zip(axes[0], panels):
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (np.asarray(clean), np.asarray(noisy)), 1)
    share = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
    flips = np.ma.masked_array(share, np.eye(num_classes, dtype=bool))
    ax.imshow(np.eye(num_classes), cmap="Greys", vmin=0, vmax=4)
    image = ax.imshow(flips, cmap="Reds", vmin=0, vmax=max(float(flips.max() or 0), 1.0))
    for (c, d), value in np.ndenumerate(share):
      if value:
        ax.text(d, c, f"{value:.0f}", ha="center", va="center", fontsize=7)
    flipped = int((np.asarray(clean) != np.asarray(noisy)).sum())
    ax.set_title(f"{title}: {flipped} of {len(clean)} flipped", fontsize=9)
    ax.set_xticks(range(num_classes), class_names, rotation=60, fontsize=7)
    ax.set_yticks(range(num_classes), class_names, fontsize=7)
    ax.set_xlabel("noisy label")
    ax.set_ylabel("clean label")
    fig.colorbar(image, ax=ax, fraction=0.046, label="% of the clean class, flipped")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot(runs, root):
  """accuracy_vs_noise.png (several rates only), curves.png and flip_matrices.png (the noise
  settings' flip matrices, plot_flip_matrices) of the finished runs."""
  import matplotlib  # plotting is optional at import time
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  root = pathlib.Path(root)
  finished = workdirs.load_runs(grid_workdirs(runs))
  clean, lines = {}, {}  # a method's clean point starts each of its noise-kind lines
  for (method, _, kind, rate), members in workdirs.groups(finished).items():
    final = [100 * s["final_accuracy"] for _, s in members]
    point = (0.0 if kind == "none" else rate, np.mean(final), np.std(final))
    if kind == "none":
      clean[method] = point
    elif kind != "file":  # a label file has no nominal rate to plot against
      lines.setdefault((method, kind), []).append(point)
  lines = {k: v + ([clean[k[0]]] if k[0] in clean else []) for k, v in lines.items()}
  if any(len(points) > 1 for points in lines.values()):
    fig, ax = plt.subplots(figsize=(5, 4))
    for (method, kind), points in sorted(lines.items()):
      rate, mean, std = map(np.array, zip(*sorted(points)))
      ax.errorbar(100 * rate, mean, yerr=std, marker="o", capsize=3, label=f"{method}, {kind}")
    ax.set(xlabel="noise rate (%)", ylabel="final test accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(root / "accuracy_vs_noise.png", dpi=120)
    plt.close(fig)
  curves = []
  for workdir, _ in runs:
    metrics = workdir / "metrics.jsonl"
    if workdir.name in (PRETRAIN, NOISE_MODEL) or not metrics.exists():
      continue
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    points = [(r["epoch"], 100 * r["eval_accuracy"]) for r in rows if "eval_accuracy" in r]
    if points:
      curves.append((workdir.name, points))
  if curves:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves:
      ax.plot(*zip(*points), label=name, lw=1)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "curves.png", dpi=120)
    plt.close(fig)
  panels, class_names = flip_panels(runs)
  if panels:
    plot_flip_matrices(panels, class_names, root / "flip_matrices.png")
