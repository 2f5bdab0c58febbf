"""The train state: everything a step reads and writes, and what checkpoints save."""

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
  """step, params, BatchNorm running stats, optimiser state and method-owned state.

  `extra` belongs to the method (e.g. label tables, EMA encoders, queues); the trainer only
  carries, shards and checkpoints it.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  extra: Any

  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}
