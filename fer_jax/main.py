r"""Command line: train and evaluate one config.

  python -m fer_jax.main --config configs/baseline.py:synthetic --workdir runs/baseline \
      [--config.num_epochs=20 ...] [--distributed [--coordinator_address=HOST:PORT
      --num_processes=N --process_id=I]]

Re-running the same command in the same workdir resumes from the latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host: one process per host). "
                  "On TPU pods and SLURM the cluster is detected; elsewhere give the three "
                  "flags below.")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "With --distributed: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process's index.")
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


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax

  f = flags.FLAGS
  if f.distributed:
    jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  from fer_jax import train

  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
