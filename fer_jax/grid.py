r"""Runs methods x noise settings x seeds from one grid spec, then writes the papers' tables.

  python -m fer_jax.grid --grid configs/grids/synthetic.py --root runs/grid [--dry_run] [--jobs N]

A grid spec is a config file whose `get_config(arg)` gives:
  data:       the dataset argument of every method config (e.g. "synthetic", "raf_db")
  methods:    config names under configs/ (e.g. ("baseline", "eac"))
  noise:      settings, each "none", "<kind>:<rate>" (symmetric:0.3, asymmetric_lanet:0.2, ...)
              or "file:<path>" (a noisy label file in the dataset's format); "instance:<rate>"
              adds a run <root>/instance_noise_model (CE on the clean labels recording its
              averaged predictions) that runs after the pretraining and before the others
  seeds:      run seeds (`config.seed`); the noisy labels stay those of `config.noise.seed`
  overrides:  ((field, value), ...) for every run (`--config.<field>=<value>`), e.g.
              (("dataset.data_dir", "/data/raf-basic"),)
  method_overrides: optional ((method, ((field, value), ...)), ...) for one method's runs
              (e.g. LA-Net's `dataset.train_landmarks`)
  pretrain:   optional config[:arg] that runs once first (e.g. "pretrain_landmarks"); its
              exported model becomes every run's `init_from`
Each run gets its own workdir under --root, named <method>_<noise>_s<seed>. A run whose
summary.json exists is skipped; an interrupted one resumes from its checkpoints. Every command
is appended to <root>/commands.sh as it starts. At the end <root> holds results.md and
results.csv (mean ± std over seeds of final, best and mean-of-last-5 accuracy, with the
commands), accuracy_vs_noise.png (when the grid has several noise rates), curves.png
(test accuracy per epoch of every run) and flip_matrices.png (each noise setting's per-class
flip matrix of the labels its runs trained on). The library behind it is
fer_jax/experiments/grid_runs.py.
"""

import pathlib

from absl import flags

from fer_jax import cli
from fer_jax.experiments import grid_runs


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  if f.jobs < 1:
    raise cli.UsageError(f"--jobs={f.jobs}: expected at least 1")
  spec = grid_runs.load_spec(f.grid)
  root = pathlib.Path(f.root)
  runs = grid_runs.plan(spec, root)  # every check before the root is made
  root.mkdir(parents=True, exist_ok=True)
  if f.dry_run:
    for workdir, cmd in runs:
      state = "done" if (workdir / "summary.json").exists() else "to run"
      print(f"[{state}] {grid_runs.shown(cmd)}")
    return
  failed = grid_runs.execute(runs, root, f.jobs)
  print(grid_runs.write_tables(runs, root), end="")
  grid_runs.plot(runs, root)
  if failed:
    raise SystemExit(f"{len(failed)} runs failed: {[str(w) for w in failed]}")


if __name__ == "__main__":
  flags.DEFINE_string("grid", None, "Grid spec file[:arg] (see the module docstring).",
                      required=True)
  flags.DEFINE_string("root", "runs/grid", "Directory of the grid's runs and tables.")
  flags.DEFINE_bool("dry_run", False, "Only list the runs and whether each is done.")
  flags.DEFINE_integer("jobs", 1, "Runs at a time (they share the devices; on one big GPU several "
                       "small runs go faster together than one after another).")
  cli.run(main)
