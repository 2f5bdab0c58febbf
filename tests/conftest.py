"""Two host devices for multi-device tests; absl flags parsed for grain; a compile cache; finished
runs (LA-Net, noisy CE) shared by the tests that read one."""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
# A persistent compile cache, set through the environment so that the runs the tests start as
# subprocesses (kill-and-resume, two hosts, grids) share it: a resumed run or a second host
# then skips the compilation, most of a tiny run's time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path("~/.cache/fer_jax/jax_cache").expanduser()))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


def _finished_run(tmp_path_factory, name, config):
  """Trains `config` to the end in a fresh directory; returns (workdir, summary)."""
  from fer_jax import train  # noqa: PLC0415

  root = tmp_path_factory.mktemp(name)
  config.dataset.cache_dir = str(root / "cache")
  config.progress_bar = False
  return root / "run", train.train_and_evaluate(config, root / "run")


@pytest.fixture(scope="session")
def lanet_run(tmp_path_factory):
  """(config, workdir) of a finished 2-epoch LA-Net run on noisy synthetic data (runlocal),
  checkpointed at epoch ends only (steps 12 and 24). Tests must not write into it."""
  from configs import lanet as lanet_config  # noqa: PLC0415

  config = lanet_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.checkpoint_every_steps = 1000
  workdir, _ = _finished_run(tmp_path_factory, "lanet_run", config)
  return config, workdir


@pytest.fixture(scope="session")
def noisy_baseline_run(tmp_path_factory):
  """(config, workdir, summary) of a finished 2-epoch CE run on 30%-noisy synthetic labels
  (runlocal). Tests must not write into it."""
  from configs import baseline  # noqa: PLC0415

  config = baseline.get_config("synthetic,noise=0.3,runlocal=true")
  workdir, summary = _finished_run(tmp_path_factory, "noisy_baseline_run", config)
  return config, workdir, summary
