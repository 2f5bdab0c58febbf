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

The library behind it is fer_jax/stablehlo.py.
"""

import pathlib

from absl import flags

from fer_jax import cli, inference, stablehlo


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  stablehlo.outputs(f.out)  # before the export, which takes a while
  model, variables, meta = inference.load_model(f.checkpoint)
  exported = stablehlo.export(model, variables, meta)
  stablehlo.write(exported, meta, f.out)
  print(f"wrote {f.out} ({pathlib.Path(f.out).stat().st_size / 1e6:.1f} MB) and {f.out}.json")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("out", "model.jaxexport", "File to write (must not exist).")
  cli.run(main)
