"""orbax CheckpointManager in `<workdir>/checkpoints`: save, keep N, resume the latest.

Each checkpoint holds three items:
  state  the TrainState and the base RNG key (StandardSave, restored onto an abstract target so
         optax's NamedTuples come back typed);
  data   every process's grain iterator state (JSON, gathered to the process that writes it),
         so a resumed run sees the same next batches on every host;
  meta   the per-epoch evaluation history (JSON), so best / mean-of-last-5 survive restarts.

A step that cannot be read back (a node lost mid-save, a damaged file) is not fatal when an
earlier step reads: the run resumes from the newest intact step, and the damaged ones are
moved to `<workdir>/checkpoints_unreadable/` (never deleted) with the reason in the log.

A save checks the disk's free space first: a checkpoint that would not fit is refused
(`cli.NoSpace`) before orbax writes any of it, so the newest complete step stays the newest.

A Ctrl-C while orbax starts or finishes a save takes effect once that call has returned: a
KeyboardInterrupt inside orbax's threads' join leaves a save half finalised and its thread
running into the interpreter's shutdown.

`WorkdirLock` keeps a second run out of a workdir whose run is going.
"""

import contextlib
import datetime
import fcntl
import json
import logging
import os
import pathlib
import signal
import socket
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from fer_jax import cli, writers


def _gather_json(value):
  """[value of process 0, value of process 1, ...] on every process."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32)).reshape(-1)
  padded = np.zeros(lengths.max(), np.uint8)
  padded[: len(data)] = data
  rows = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
  return [json.loads(row[:n].tobytes()) for row, n in zip(rows, lengths)]


# orbax's per-checkpoint metadata and JSON items, besides the arrays (measured: ~30 KB).
_CHECKPOINT_MARGIN = 256 * 1024


@contextlib.contextmanager
def _interrupt_after():
  """Holds back SIGINT (Ctrl-C) in the main thread until the block ends, then raises it."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  caught = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if caught:
    raise KeyboardInterrupt


class CheckpointError(cli.UsageError):
  """No checkpoint of a workdir can be read."""


class WorkdirBusy(cli.UsageError):
  """Another process holds the workdir's lock."""


def hold(path):
  """An exclusive flock on the file `path` (created if missing): its open descriptor, which
  holds the lock until closed or until the process ends; None when another process holds it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  return fd


class WorkdirLock:
  """An exclusive OS lock (flock) on `<workdir>/run.lock`, held by process 0 for the life of a
  run. The kernel releases it when the process ends, however it ends, so a killed run never
  leaves a stale lock; the file keeps the last holder's host, pid and start time."""

  NAME = "run.lock"

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / self.NAME
    self._fd = None

  @property
  def held(self):
    return self._fd is not None

  def acquire(self):
    """Takes the lock where the workdir exists (process 0; a no-op once held). Every process
    raises WorkdirBusy when process 0 finds another run holding it. Called by every process at
    the same points (on several hosts it is a collective)."""
    holder = None
    if jax.process_index() == 0 and not self.held and self.path.parent.is_dir():
      fd = hold(self.path)
      if fd is None:
        holder = self.path.read_text(errors="replace").strip() or "a process starting now"
      else:
        self._fd = fd
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, started {started}\n"
                 .encode())
    if jax.process_count() > 1:
      busy = multihost_utils.broadcast_one_to_all(np.int32(holder is not None))
      if busy and holder is None:
        holder = "a process seen by process 0"
    if holder is not None:
      raise WorkdirBusy(f"{self.path.parent}: another run is training in this workdir ({holder});"
                        " wait for it to end or stop it, or use another --workdir")

  def release(self):
    if self.held:
      os.close(self._fd)  # closing the descriptor releases the flock
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def tree_bytes(tree):
  """Bytes of the arrays of `tree` (as written uncompressed; global arrays counted once)."""
  return sum(x.nbytes for x in jax.tree.leaves(tree))


class Checkpointer:
  def __init__(self, directory, keep):
    self._manager = ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
      item_names=("state", "data", "meta"),
    )

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step, state, rng, data_state, meta):
    """Saves asynchronously; a step that already has a checkpoint is left as it is.

    Raises:
      cli.NoSpace: before writing anything, when the disk lacks the checkpoint's size (the
        state's bytes and a margin for orbax's metadata).
    """
    if step in self._manager.all_steps():
      return
    with _interrupt_after():
      self._manager.wait_until_finished()  # the space a save in flight takes is then counted
    latest = self._manager.latest_step()
    kept = ("no checkpoint yet" if latest is None
            else f"the checkpoint of step {latest} is kept, complete")
    writers.check_space(pathlib.Path(self._manager.directory) / str(step),
                tree_bytes(state) + _CHECKPOINT_MARGIN,
                f"the checkpoint of step {step}", kept)
    with _interrupt_after():
      self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave({"state": state, "rng": rng}),
          data=ocp.args.JsonSave({"per_process": _gather_json(data_state)}),
          meta=ocp.args.JsonSave(meta),
        ),
      )

  def restore(self, state, rng):
    """Restores the newest readable checkpoint shaped and sharded like `state` and `rng`.

    Newer steps that fail to read while an older one reads are set aside (module docstring).
    When no step reads, nothing is moved and the newest step's error is raised.

    Returns:
      (state, rng, data_state, meta), or None when there is no checkpoint.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"state": state, "rng": rng})
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target),
                              data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=args)
        break
      except Exception as e:  # noqa: BLE001 (any read failure: try the step before)
        failed.append((step, e))
    else:
      if failed:
        step, error = failed[0]
        raise CheckpointError(f"{self._manager.directory}: no checkpoint can be read; step "
                              f"{step}: {type(error).__name__}: {str(error)[:300]}") from error
      return None
    self._set_aside(failed, step)
    per_process = restored.data["per_process"]
    if len(per_process) != jax.process_count():
      raise cli.UsageError(f"checkpoint {step} in {self._manager.directory} was written by "
                       f"{len(per_process)} processes; this run has {jax.process_count()}")
    return (restored.state["state"], restored.state["rng"], per_process[jax.process_index()],
            restored.meta)

  def _set_aside(self, failed, restored_step):
    if not failed:
      return
    directory = pathlib.Path(self._manager.directory)
    aside = directory.parent / f"{directory.name}_unreadable"
    for step, error in failed:
      logging.warning("Checkpoint step %d in %s cannot be read (%s: %s); resuming from step %d "
                      "and moving it to %s", step, directory, type(error).__name__,
                      str(error)[:200], restored_step, aside)
    if jax.process_index() == 0:
      aside.mkdir(exist_ok=True)
      for step, _ in failed:
        target = aside / str(step)
        while target.exists():  # an earlier set-aside copy of the same step stays too
          target = target.with_name(target.name + "_")
        (directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("fer_jax: unreadable checkpoints set aside")
    self._manager.reload()

  def close(self):
    with _interrupt_after():
      self._manager.wait_until_finished()
      self._manager.close()
