"""Checkpoints that survive a crash mid-save: the newest intact step is restored."""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import checkpoint


def _save_steps(directory, steps):
  ckpt = checkpoint.Checkpointer(directory, keep=5)
  for step in steps:
    ckpt.save(step, {"w": jnp.full(4, float(step))}, jax.random.key(0), {"position": step},
              {"history": [step]})
  ckpt.close()


def _damage(step_dir):
  """What a node lost mid-save leaves: the array data of the step cut short."""
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:7])


def _restore(directory):
  ckpt = checkpoint.Checkpointer(directory, keep=5)
  try:
    return ckpt.restore({"w": jnp.zeros(4)}, jax.random.key(1))
  finally:
    ckpt.close()


def test_a_damaged_latest_step_falls_back_to_the_newest_intact_one(tmp_path, caplog):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1, 2, 3])
  _damage(directory / "3")
  state, _, data_state, meta = _restore(directory)
  np.testing.assert_array_equal(state["w"], np.full(4, 2.0))
  assert data_state == {"position": 2} and meta == {"history": [2]}
  assert "step 3" in caplog.text and "cannot be read" in caplog.text
  # Kept, not deleted: moved beside the checkpoints, out of the way of the next saves.
  assert (tmp_path / "checkpoints_unreadable" / "3" / "state").is_dir()
  assert sorted(p.name for p in directory.iterdir() if p.name.isdigit()) == ["1", "2"]
  _save_steps(directory, [3])  # the step can be written again
  np.testing.assert_array_equal(_restore(directory)[0]["w"], np.full(4, 3.0))


def test_no_readable_step_is_an_error_and_moves_nothing(tmp_path):
  directory = tmp_path / "checkpoints"
  _save_steps(directory, [1])
  _damage(directory / "1")
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint can be read; step 1"):
    _restore(directory)
  assert (directory / "1").is_dir() and not (tmp_path / "checkpoints_unreadable").exists()


def test_ctrl_c_during_an_orbax_call_takes_effect_when_the_call_returns():
  finished, before = [], signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job
  with pytest.raises(KeyboardInterrupt), checkpoint._interrupt_after():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the signal arrives inside the block
    finished.append(True)
  assert finished == [True]
  assert signal.getsignal(signal.SIGINT) is before  # restored
