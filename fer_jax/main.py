r"""Command line: train and evaluate one config.

  python -m fer_jax.main --config configs/baseline.py:synthetic --workdir runs/baseline \
      [--config.num_epochs=20 ...] [--distributed [--coordinator_address=HOST:PORT
      --num_processes=N --process_id=I]]

Re-running the same command in the same workdir resumes from the latest checkpoint.
"""

import os
import pathlib

from absl import flags, logging
from ml_collections import config_flags

from fer_jax import cli

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host: one process per host). "
                  "On TPU pods and SLURM the cluster is detected; elsewhere give the three "
                  "flags below.")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")
flags.DEFINE_string("compile_cache", "~/.cache/fer_jax/jax_cache",
                    "Persistent XLA compilation cache: a run whose steps have the shapes of an "
                    "earlier one (a resume, a grid's next seed) loads them instead of compiling. "
                    "Empty: none. JAX_COMPILATION_CACHE_DIR, when set, takes precedence.")
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/baseline.py:synthetic.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries:
  """Drops orbax's INFO chatter (several lines per checkpoint) and two TFDS notes that are
  not problems here (PIL decodes images instead of OpenCV; an unprepared dataset has no
  dataset_info.json yet). Other warnings still show."""

  _TFDS_NOTES = ("OpenCV is not installed", "has no dataset_info.json")

  def filter(self, record):
    if "/orbax/" in record.pathname:
      return record.levelno > 20
    if "/tensorflow_datasets/" in record.pathname:
      return not any(note in record.getMessage() for note in self._TFDS_NOTES)
    return True


def check_config(config):
  """Raises cli.UsageError for config values that would otherwise fail only after the dataset
  is loaded (minutes for a first preparation) or as a bare import error."""
  cli.check_method(config.method)
  cli.check_dataset(config.dataset.name)
  from fer_jax.data import label_noise  # noqa: PLC0415 (after the flags: it imports TFDS)

  label_noise.check_config(config.noise)
  if config.init_from:
    from fer_jax.models import weights  # noqa: PLC0415

    missing = [n for n in (weights.META, weights.VARIABLES)
               if not (pathlib.Path(config.init_from).expanduser() / n).is_file()]
    if missing:
      raise cli.UsageError(f"config.init_from={config.init_from}: no {' or '.join(missing)}; "
                           "expected a model directory (`python -m fer_jax.convert` output or "
                           "a run's <workdir>/model)")
  landmarks = config.dataset.get("train_landmarks")
  if landmarks and not pathlib.Path(landmarks).expanduser().is_file():
    raise cli.UsageError(f"config.dataset.train_landmarks={landmarks}: no such file")


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value (a boolean "
                         "config field is --config.<field>=False)")
  check_config(flags.FLAGS.config)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax

  f = flags.FLAGS
  if f.compile_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(f.compile_cache).expanduser()))
  if f.distributed:
    jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  from fer_jax import train

  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
