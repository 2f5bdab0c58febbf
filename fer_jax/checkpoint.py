"""orbax CheckpointManager in `<workdir>/checkpoints`: save, keep N, resume the latest.

Each checkpoint holds three items:
  state  the TrainState and the base RNG key (StandardSave, restored onto an abstract target so
         optax's NamedTuples come back typed);
  data   the grain iterator state (JSON), so a resumed run sees the same next batch;
  meta   the per-epoch evaluation history (JSON), so best / mean-of-last-5 survive restarts.
"""

import jax
import orbax.checkpoint as ocp


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
        data=ocp.args.JsonSave(data_state),
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
    return restored.state["state"], restored.state["rng"], restored.data, restored.meta

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
