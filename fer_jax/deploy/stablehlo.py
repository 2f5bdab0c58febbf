"""A model as serialized StableHLO (jax.export): one file that runs with `jax` alone, without
fer_jax, Flax or the training code, and a .json sidecar of its classes and input.

The function maps uint8 RGB images (batch, size, size, 3), any batch size, to class
probabilities (batch, classes): normalisation is inside it, resizing is the caller's (bilinear
to `image_size`, as the eval transform).
"""

import json
import pathlib

import jax
import jax.numpy as jnp

from fer_jax import inference

PLATFORMS = ("cpu", "cuda")


def export(model, variables, meta, platforms=PLATFORMS):
  """The jax.export.Exported of uint8 images -> probabilities, weights as constants."""
  probabilities = inference.probability_fn(model, variables, meta)
  batch, = jax.export.symbolic_shape("batch")
  size = meta["image_size"]
  spec = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
  return jax.export.export(jax.jit(probabilities), platforms=platforms)(spec)


def outputs(out):
  """The model file and its .json sidecar; FileExistsError if either exists."""
  out = pathlib.Path(out)
  sidecar = out.with_name(out.name + ".json")
  for path in (out, sidecar):
    if path.exists():
      raise FileExistsError(f"{path} exists; not overwritten")
  return out, sidecar


def write(exported, meta, out):
  """Writes `exported` to `out` and the model's classes and input to `out`.json."""
  out, sidecar = outputs(out)
  out.write_bytes(exported.serialize())
  sidecar.write_text(json.dumps({
    "class_names": meta["class_names"], "image_size": meta["image_size"],
    "input": "uint8 RGB (batch, image_size, image_size, 3), resized bilinearly",
    "output": "class probabilities (batch, classes)", "platforms": list(exported.platforms),
    "source": meta.get("source", "")}, indent=2) + "\n")
