"""Per-sample tables in `TrainState.extra` (LA-Net's label history, SCN's relabels): writes
from a batch that may hold a sample more than once."""

import jax.numpy as jnp


def last_occurrence(index):
  """(B,) True where no later position of the batch holds the same index."""
  later = jnp.triu(index[:, None] == index[None, :], k=1)
  return ~later.any(1)


def write_rows(table, index, values, mask=None):
  """`table` with rows `index` set to `values` where `mask`; a sample that occurs twice in the
  batch takes its last occurrence's value, as an indexed assignment in torch does on CPU."""
  keep = last_occurrence(index) if mask is None else mask & last_occurrence(index)
  rows = jnp.where(keep, index, table.shape[0])  # out of range: dropped
  return table.at[rows].set(values.astype(table.dtype), mode="drop")
