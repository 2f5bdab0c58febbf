"""Metrics that a run with known label flips (synthetic noise: batch["clean_label"]) logs."""

import jax.numpy as jnp


def weight_by_label(weights, batch):
  """The mean per-sample `weights` of the wrongly and the rightly labelled samples of a batch
  ({} without clean labels): does a method's weight single out the flipped labels?"""
  if "clean_label" not in batch:
    return {}
  wrong = batch["clean_label"] != batch["label"]
  return {"weight_wrong": jnp.sum(weights * wrong) / jnp.maximum(wrong.sum(), 1),
          "weight_right": jnp.sum(weights * ~wrong) / jnp.maximum((~wrong).sum(), 1)}
