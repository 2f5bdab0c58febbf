r"""Exports a trained model as serialized StableHLO (jax.export): a single file that runs
without fer_jax, Flax or the training code, with only `jax` installed.

  python -m fer_jax.export --checkpoint runs/ncct_syn30 --out ncct_syn30.jaxexport

Writes <out> (the serialized function, weights inside) and <out>.json (class names, image
size, platforms). The function maps uint8 RGB images (batch, size, size, 3), any batch size,
to class probabilities (batch, classes): normalisation is inside it, resizing is the
caller's (bilinear to `image_size`, as the eval transform). Lowered for CPU and CUDA.

Use it anywhere with:
    import json, jax, numpy as np
    run = jax.export.deserialize(open("ncct_syn30.jaxexport", "rb").read())
    meta = json.load(open("ncct_syn30.jaxexport.json"))
    probs = run.call(images_uint8)           # (N, len(meta["class_names"]))
"""

import json
import pathlib

import jax
import jax.numpy as jnp
from absl import flags

from fer_jax import cli, predict

PLATFORMS = ("cpu", "cuda")


def export(model, variables, meta, platforms=PLATFORMS):
  """The jax.export.Exported of uint8 images -> probabilities, weights as constants."""
  probabilities = predict.probability_fn(model, variables, meta)
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
      raise FileExistsError(f"{path} exists; choose another --out")
  return out, sidecar


def write(exported, meta, out):
  out, sidecar = outputs(out)
  out.write_bytes(exported.serialize())
  sidecar.write_text(json.dumps({
    "class_names": meta["class_names"], "image_size": meta["image_size"],
    "input": "uint8 RGB (batch, image_size, image_size, 3), resized bilinearly",
    "output": "class probabilities (batch, classes)", "platforms": list(exported.platforms),
    "source": meta.get("source", "")}, indent=2) + "\n")


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  outputs(f.out)  # before the export, which takes a while
  model, variables, meta = predict.load_model(f.checkpoint)
  exported = export(model, variables, meta)
  write(exported, meta, f.out)
  print(f"wrote {f.out} ({pathlib.Path(f.out).stat().st_size / 1e6:.1f} MB) and {f.out}.json")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("out", "model.jaxexport", "File to write (must not exist).")
  cli.run(main)
