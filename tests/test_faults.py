"""Faults of a run's surroundings, as tests/test_cli_errors.py checks user mistakes: a second run
in a busy workdir, a diverging run, a full disk. Each row runs `fer_jax.main` as a subprocess
and asserts the one line, the exit status and that nothing written before was lost; the
in-process tests below cover the writes a row does not reach (model/, a full disk's clean-up,
the lock's release when its holder dies)."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from fer_jax import checkpoint, cli, train, writers
from fer_jax.models import weights
from tests.test_cli_errors import _snapshot, _subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Fault:
  """What a row's setup made: the run's extra flags, its workdir, the exit status and the
  strings its one line must hold, and a check of what must be kept once it has run."""

  workdir: pathlib.Path
  flags: list
  status: int
  head: str
  culprits: list
  kept: object = None
  cleanup: object = None


def _tmpfs(path, size):
  """Mounts a tmpfs of `size` at `path`; skips the test where mounting is not allowed."""
  path.mkdir(parents=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
  return path


def _unmount(path):
  subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _holder(workdir):
  """A process holding `workdir`'s lock, as a running trainer does; returns it once it holds
  the lock."""
  code = ("import sys, time; from fer_jax import checkpoint; lock = checkpoint.WorkdirLock("
          "sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(600)")
  process = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"),
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "held"
  return process


def busy_workdir(tmp):
  workdir = tmp / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text("{}\n")  # another run's: must stay as it is
  holder = _holder(workdir)
  return Fault(workdir, [], cli.USAGE_EXIT, "error",
               [str(workdir), "another run is training", f"pid {holder.pid}", "host ",
                "started ", "another --workdir"],
               cleanup=lambda: (holder.kill(), holder.wait()))


def diverging_run(tmp):
  def kept(workdir):
    # Step 1 trained on finite parameters; nothing after the divergence was saved.
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]
    assert not (workdir / "model").exists()

  # No log step before the divergence: the check before each checkpoint must catch it.
  return Fault(tmp / "run", ["--config.optimizer.lr=1e12", "--config.checkpoint_every_steps=1",
                             "--config.log_every_steps=1000"],
               cli.DIVERGED_EXIT, "diverged",
               ["became nan at step 2", "checkpoint of step 1 kept", "from before it",
                "config.optimizer.lr=1000000000000.0", "a new --workdir"], kept)


def full_disk(tmp):
  disk = _tmpfs(tmp / "disk", "3500k")  # config, logs and one 2.1 MB checkpoint: no second

  def kept(workdir):
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]
    assert json.loads((workdir / "config.json").read_text())["checkpoint_every_steps"] == 1

  return Fault(disk / "run", ["--config.checkpoint_every_steps=1"], cli.NO_SPACE_EXIT,
               "no space",
               [str(disk / "run/checkpoints/2"), "the checkpoint of step 2 needs about",
                "MB free", "the checkpoint of step 1 is kept, complete", "run the same command"],
               kept, cleanup=lambda: _unmount(disk))


@pytest.mark.parametrize("setup", [busy_workdir, diverging_run, full_disk],
                         ids=lambda f: f.__name__)
def test_fault_is_one_line_and_loses_nothing(setup, tmp_path):
  fault = setup(tmp_path)
  try:
    before = _snapshot(fault.workdir) if fault.workdir.exists() else {}
    result = _subprocess([
      sys.executable, "-m", "fer_jax.main", "--config", "configs/baseline.py:runlocal=true",
      "--workdir", str(fault.workdir), "--config.progress_bar=false",
      f"--config.dataset.cache_dir={tmp_path / 'cache'}", *fault.flags],
      JAX_COMPILATION_CACHE_DIR=os.environ["JAX_COMPILATION_CACHE_DIR"])
    output = result.stdout + result.stderr
    assert result.returncode == fault.status, output
    assert "Traceback" not in output, output
    head = f"fer_jax main: {fault.head}: "
    assert result.stderr.count(head) == 1, result.stderr
    line = result.stderr[result.stderr.index(head):].splitlines()[0]
    for culprit in fault.culprits:
      assert culprit in line, (culprit, line)
    for path, (mtime, data) in before.items():
      assert path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path
    if fault.kept is not None:
      fault.kept(fault.workdir)
  finally:
    if fault.cleanup is not None:
      fault.cleanup()


def test_the_lock_is_released_when_its_holder_dies_and_refuses_a_second_holder(tmp_path):
  holder = _holder(tmp_path)
  with pytest.raises(checkpoint.WorkdirBusy, match=f"pid {holder.pid}"):
    checkpoint.WorkdirLock(tmp_path).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with checkpoint.WorkdirLock(tmp_path) as lock:
    lock.acquire()  # no stale lock: the kernel released the dead holder's
    assert lock.held and f"pid {os.getpid()}," in (tmp_path / "run.lock").read_text()
    with pytest.raises(checkpoint.WorkdirBusy):  # a second holder, even in this process
      checkpoint.WorkdirLock(tmp_path).acquire()


def _model(directory, step, value):
  weights.save(directory, {"params": {"head": {"kernel": np.full((64, 64), value, np.float32)}}},
               {"step": step})


def test_model_dir_is_replaced_whole_and_a_full_disk_keeps_the_earlier_one(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  _model(workdir / "model", 4, 1.0)
  variables = {"params": {"head": {"kernel": np.full((64, 64), 2.0, np.float32)}}}
  train._write_model(workdir, 4, 8, variables, {"step": 8})
  assert weights.read_meta(workdir / "model")["step"] == 8
  assert weights.read_meta(workdir / "model_step4")["step"] == 4
  assert sorted(p.name for p in workdir.iterdir()) == ["model", "model_step4"]  # no temporary

  disk = _tmpfs(tmp_path / "disk", "64k")
  try:
    _model(disk / "model", 8, 1.0)
    before = _snapshot(disk)
    big = {"params": {"head": {"kernel": np.ones((200, 200), np.float32)}}}  # 160 KB
    with pytest.raises(cli.NoSpace, match=r"model: the model needs about 0\.2 MB .* the model "
                                          r"of step 8 in model/ and the checkpoints are kept"):
      train._write_model(disk, 8, 12, big, {"step": 12})
    assert _snapshot(disk) == before  # the earlier model/ as it was, no temporary left
    # A write that passes the check and meets a full disk anyway is named and cleaned up too.
    (disk / "filler").write_bytes(b"\0" * 8 * 1024)
    with pytest.raises(cli.NoSpace, match="summary.json: summary.json needs about"):
      writers.write_atomically(disk / "summary.json",
                               lambda tmp: tmp.write_bytes(b"x" * 100 * 1024), 1, "summary.json")
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "model"]
  finally:
    _unmount(disk)


def test_metrics_log_on_a_full_disk_names_the_file(tmp_path):
  disk = _tmpfs(tmp_path / "disk", "64k")
  try:
    writer = writers.MetricWriter(disk)
    (disk / "filler").write_bytes(b"\0" * 60 * 1024)
    with pytest.raises(cli.NoSpace, match=f"{disk / 'metrics.jsonl'}: the metrics log"):
      for step in range(2000):
        writer.write_scalars(step, {"loss": 1.0})
        writer.flush()
  finally:
    _unmount(disk)


def test_a_disk_that_fills_up_anywhere_is_one_line_with_its_status(tmp_path, capsys):
  def main(argv):
    del argv
    try:
      raise OSError(28, "No space left on device", str(tmp_path / "x"))
    except OSError as e:
      raise RuntimeError("a library's own wrapper") from e

  with pytest.raises(SystemExit) as exit_:
    cli.run(main, "train", ["prog"])
  assert exit_.value.code == cli.NO_SPACE_EXIT
  err = capsys.readouterr().err
  assert err.startswith(f"fer_jax train: no space: {tmp_path / 'x'}: No space left on device")
  assert len(err.strip().splitlines()) == 1


def test_a_run_holds_its_workdir_for_its_life_only(tmp_path, monkeypatch):
  seen = []

  def fake(config, workdir, lock):
    workdir.mkdir()
    lock.acquire()
    seen.append(lock.held)
    with pytest.raises(checkpoint.WorkdirBusy):
      checkpoint.WorkdirLock(workdir).acquire()
    raise KeyboardInterrupt

  monkeypatch.setattr(train, "_train_and_evaluate", fake)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(None, tmp_path / "run")
  assert seen == [True]
  with checkpoint.WorkdirLock(tmp_path / "run") as lock:
    lock.acquire()  # released on the way out


def test_a_changed_epoch_count_is_refused_inside_a_progressive_epoch_only(tmp_path):
  from configs import lanet  # noqa: PLC0415

  config = lanet.get_config("synthetic,runlocal=true")
  saved = {"num_epochs": config.num_epochs}
  config.num_epochs += 1
  (tmp_path / "checkpoints/24").mkdir(parents=True)  # the end of epoch 2 (12 steps each)
  train._check_progressive_resume(tmp_path, config, saved, 12)  # applies from epoch 3 on
  (tmp_path / "checkpoints/30").mkdir()
  with pytest.raises(cli.UsageError, match=r"config.num_epochs=3: this run stopped inside epoch "
                                           r"3 \(step 30\) of config.num_epochs=2.*resume with "
                                           r"--config.num_epochs=2"):
    train._check_progressive_resume(tmp_path, config, saved, 12)
  config.input.sampler = "shuffle"  # each epoch's draw does not depend on the count
  train._check_progressive_resume(tmp_path, config, saved, 12)
