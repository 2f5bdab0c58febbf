r"""Exports a trained model as serialized StableHLO (jax.export, the default): a single file
that runs without fer_jax, Flax or the training code, with only `jax` installed; or, with
--format onnx, as an ONNX model that onnxruntime runs without JAX.

  python -m fer_jax.export --checkpoint runs/ncct_syn30 --out ncct_syn30.jaxexport
  python -m fer_jax.export --checkpoint runs/ncct_syn30 --format onnx --out ncct_syn30.onnx

Writes <out> (the serialized function, weights inside) and <out>.json (class names, image
size, platforms). The function maps uint8 RGB images (batch, size, size, 3), any batch size,
to class probabilities (batch, classes): normalisation is inside it, resizing is the
caller's (bilinear to `image_size`, as the eval transform). Lowered for CPU and CUDA.

Use it anywhere with:
    import json, jax, numpy as np
    run = jax.export.deserialize(open("ncct_syn30.jaxexport", "rb").read())
    meta = json.load(open("ncct_syn30.jaxexport.json"))
    probs = run.call(images_uint8)           # (N, len(meta["class_names"]))

--format onnx (the `onnx` extra: pip install -e ".[onnx]") writes the same function as ONNX
(opset 18, input "images", output "probabilities", any batch size; default --out model.onnx),
checked against JAX on random images before it is written, and <out>.json: class names in
output order, input layout, mean/std (applied inside the model) and the face crop's framing
(the five-point template of RAF-DB-style crops). The same JSON is in the model's metadata
(key "fer_jax"). Run it with onnxruntime alone:
    import json, onnxruntime as ort
    session = ort.InferenceSession("ncct_syn30.onnx", providers=["CPUExecutionProvider"])
    meta = json.load(open("ncct_syn30.onnx.json"))
    probs = session.run(None, {"images": images_uint8})[0]   # (N, len(meta["class_names"]))

The library behind it is fer_jax/deploy/stablehlo.py and fer_jax/deploy/onnx_export.py.
"""

import pathlib

from absl import flags

from fer_jax import cli, inference
from fer_jax.deploy import stablehlo

DEFAULT_OUT = {"stablehlo": "model.jaxexport", "onnx": "model.onnx"}


def _stablehlo(f, out):
  model, variables, meta = inference.load_model(f.checkpoint)
  exported = stablehlo.export(model, variables, meta)
  stablehlo.write(exported, meta, out)


def _onnx(f, out):
  from fer_jax.deploy import onnx_export  # imports nothing optional until used

  onnx_export.require()  # before loading the model: name the extra at once
  model, variables, meta = inference.load_model(f.checkpoint)
  proto = onnx_export.export(model, variables, meta)
  difference = onnx_export.check(proto, model, variables, meta)
  if difference > onnx_export.TOLERANCE:  # a conversion bug, not the user's: keep the traceback
    raise RuntimeError(f"the ONNX model's probabilities differ from JAX's by {difference:.2g} "
                       f"(> {onnx_export.TOLERANCE:g}); {out} not written")
  onnx_export.write(proto, out)
  print(f"onnxruntime matches JAX to {difference:.1g} (max |probability difference|, random "
        "images)")


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  out = f.out or DEFAULT_OUT[f.format]
  stablehlo.outputs(out)  # before the export, which takes a while
  (_onnx if f.format == "onnx" else _stablehlo)(f, out)
  print(f"wrote {out} ({pathlib.Path(out).stat().st_size / 1e6:.1f} MB) and {out}.json")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_enum("format", "stablehlo", list(DEFAULT_OUT),
                    "stablehlo: jax.export, runs with jax alone; onnx: runs with onnxruntime "
                    "alone (the onnx extra).")
  flags.DEFINE_string("out", None, "File to write (must not exist); default model.jaxexport, "
                      "or model.onnx for --format onnx.")
  cli.run(main)
