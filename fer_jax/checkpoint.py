"""orbax CheckpointManager in `<workdir>/checkpoints`: save, keep N, resume the latest.

Each checkpoint holds three items:
  state  the TrainState and the base RNG key (StandardSave, restored onto an abstract target so
         optax's NamedTuples come back typed);
  data   every process's grain iterator state (JSON, gathered to the process that writes it),
         so a resumed run sees the same next batches on every host;
  meta   the per-epoch evaluation history (JSON), so best / mean-of-last-5 survive restarts.
"""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


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
    """Saves asynchronously; a step that already has a checkpoint is left as it is."""
    if step in self._manager.all_steps():
      return
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave({"state": state, "rng": rng}),
        data=ocp.args.JsonSave({"per_process": _gather_json(data_state)}),
        meta=ocp.args.JsonSave(meta),
      ),
    )

  def restore(self, state, rng):
    """Restores the latest checkpoint shaped and sharded like `state` and `rng`.

    Returns:
      (state, rng, data_state, meta), or None when there is no checkpoint.
    """
    step = self._manager.latest_step()
    if step is None:
      return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"state": state, "rng": rng})
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
    per_process = restored.data["per_process"]
    if len(per_process) != jax.process_count():
      raise ValueError(f"checkpoint {step} in {self._manager.directory} was written by "
                       f"{len(per_process)} processes; this run has {jax.process_count()}")
    return (restored.state["state"], restored.state["rng"], per_process[jax.process_index()],
            restored.meta)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
