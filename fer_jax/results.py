r"""Mean ± std over seeds of finished runs, as the papers report them, in Markdown.

  python -m fer_jax.results runs/compare/*/ [--out table.md]

Reads each run's config.json and summary.json, groups runs by (method, dataset, noise kind,
noise rate) and prints, per group: the number of seeds, final accuracy, best accuracy (the max
over epochs, NCCTFER/LA-Net's metric) and the mean of the last 5 epochs (EAC/SCN's metric), each
as mean ± std (population std over seeds), in %. `--by_noise` prints a row per method instead,
the final and best accuracy under each noise setting side by side, each final with its margin
over CE (`--reference` names another method). The library behind it is
fer_jax/experiments/workdirs.py.
"""

import pathlib

from absl import flags

from fer_jax import cli
from fer_jax.experiments import workdirs


def main(argv):
  out = flags.FLAGS.out
  if len(argv) < 2:
    raise cli.UsageError("give at least one run directory")
  if out and pathlib.Path(out).exists():
    raise cli.UsageError(f"--out={out} exists; choose another --out (never overwritten)")
  missing = [d for d in argv[1:] if not pathlib.Path(d).is_dir()]
  if missing:
    raise cli.UsageError(f"no such run directory: {', '.join(missing)}")
  finished = workdirs.load_runs(argv[1:])
  if not finished:
    raise cli.UsageError(f"no finished run in {', '.join(argv[1:])}: expected run directories "
                         "holding config.json and summary.json")
  by_noise, reference = flags.FLAGS.by_noise, flags.FLAGS.reference
  methods = sorted({key[0] for key, _, _ in finished})
  if by_noise and reference not in methods:
    raise cli.UsageError(f"--reference={reference}: no finished run of that method among the "
                         f"runs given (their methods: {', '.join(methods)})")
  text = workdirs.noise_columns(finished, reference) if by_noise else workdirs.table(finished)
  print(text, end="")
  if out:
    with open(out, "x") as table_file:
      table_file.write(text)


if __name__ == "__main__":
  flags.DEFINE_string("out", "", "Also write the table to this file (never overwritten).")
  flags.DEFINE_bool("by_noise", False, "A row per method, the final and best accuracy of each "
                    "noise setting side by side, the final's margin over --reference")
  flags.DEFINE_string("reference", workdirs.REFERENCE_METHOD,
                      "--by_noise: the method the margins are taken over")
  cli.run(main)
