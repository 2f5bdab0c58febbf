"""A model as ONNX: one file that onnxruntime runs without JAX, Flax or fer_jax, and a .json
sidecar of its classes, input and face framing (also in the model's metadata, key `fer_jax`).

The graph is inference.probability_fn: uint8 RGB images (batch, size, size, 3), any batch size,
to class probabilities (batch, classes), normalisation inside; resizing is the caller's
(bilinear to `image_size`, as the eval transform). jax2onnx converts it (the `onnx` extra).

jax2onnx is handed a replay of the function's jaxpr rather than the Flax model, for two reasons:
it patches flax.linen while it traces (its max_pool shim takes keyword arguments and string
padding only, which ResNet's call is not), and it lowers a max-pool window to an ONNX MaxPool
over every axis, which onnxruntime refuses on 4-D maps (3 spatial axes at most): the replay pools
NHWC maps as 3-D windows over (batch x channels, height, width).
"""

import contextlib
import importlib.metadata
import json
import logging

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from fer_jax import cli, inference
from fer_jax.deploy import stablehlo
from fer_jax.inference import faces

INSTALL = 'pip install -e ".[onnx]"'
INPUT, OUTPUT = "images", "probabilities"
METADATA_KEY = "fer_jax"  # the model's metadata entry holding `description`
# The lowest opset of jax2onnx's graph (ReduceMax takes its axes as an input from 18 on), so
# onnxruntime 1.14 and later run it.
OPSET = 18
TOLERANCE = 1e-4  # largest |onnxruntime - JAX| probability accepted by `check`
_CALLS = ("jit", "pjit", "closed_call", "custom_jvp_call", "custom_vjp_call")


def require():
  """The jax2onnx module; cli.UsageError naming the extra when it or onnxruntime is absent."""
  try:
    import jax2onnx  # optional: the onnx extra
    import onnxruntime  # noqa: F401  (`check` runs the model)
  except ImportError as e:
    raise cli.UsageError(f"{e.name} is not installed: --format onnx needs the `onnx` extra, "
                         f"{INSTALL}") from e
  return jax2onnx


def _max_pool(x, window_dimensions, window_strides, padding, base_dilation, window_dilation):
  """reduce_window_max of an NHWC map over (batch x channels, H, W): a 3-D ONNX MaxPool."""
  spatial = slice(1, 3)
  trivial = all(v[0] == v[3] == 1 for v in (window_dimensions, window_strides, base_dilation,
                                            window_dilation))
  if not trivial or padding[0] != (0, 0) or padding[3] != (0, 0):
    return jax.lax.reduce_window_max_p.bind(
      x, window_dimensions=window_dimensions, window_strides=window_strides, padding=padding,
      base_dilation=base_dilation, window_dilation=window_dilation)
  n, h, w, c = x.shape
  y = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w)
  y = jax.lax.reduce_window_max_p.bind(
    y, window_dimensions=(1, *window_dimensions[spatial]),
    window_strides=(1, *window_strides[spatial]), padding=((0, 0), *padding[spatial]),
    base_dilation=(1, 1, 1), window_dilation=(1, *window_dilation[spatial]))
  return jnp.transpose(y.reshape(n, c, *y.shape[1:]), (0, 2, 3, 1))


def _replay(jaxpr, consts, *args):
  """Evaluates `jaxpr` primitive by primitive, calls inlined and 4-D max-pools as `_max_pool`."""
  env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

  def read(var):
    return var.val if isinstance(var, jax_core.Literal) else env[var]

  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name in _CALLS:
      inner = eqn.params.get("call_jaxpr") or eqn.params["jaxpr"]
      outs = _replay(inner.jaxpr, inner.consts, *ins)
    elif name == "reduce_window_max" and ins[0].ndim == 4:
      outs = [_max_pool(ins[0], **eqn.params)]
    else:
      outs = eqn.primitive.bind(*ins, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


@contextlib.contextmanager
def _quiet():
  # jax2onnx logs every conversion at INFO on the root logger and, on first use, the tracebacks
  # of its plugins for other libraries (dm_pix) that fail to import; onnx_ir warns that it
  # skips the value info of shape constants. None of it concerns the model, which `check`
  # verifies, and a command's user would read it as failure: only errors pass.
  previous = logging.root.manager.disable
  logging.disable(logging.WARNING)
  try:
    yield
  finally:
    logging.disable(previous)


def description(meta, opset=OPSET):
  """What a caller needs beside the model: classes in output order, input, preprocessing and
  the face crop's framing."""
  size, classes = meta["image_size"], len(meta["class_names"])
  return {
    "class_names": meta["class_names"], "image_size": size,
    "input": {"name": INPUT, "shape": ["batch", size, size, 3], "dtype": "uint8",
              "layout": "NHWC", "channels": "RGB"},
    "output": {"name": OUTPUT, "shape": ["batch", classes],
               "meaning": "softmax class probabilities, in class_names order"},
    "preprocessing": f"resize to {size} x {size} with PIL's bilinear filter (the eval "
                     "transform); the model normalises itself: (pixels / 255 - mean) / std",
    "mean": meta["mean"], "std": meta["std"],
    "face_crop": {
      "size": inference.ALIGN_SIZE, "point_names": list(faces.POINT_NAMES),
      "points": np.round(faces.template(inference.ALIGN_SIZE), 4).tolist(),
      "framing": "RAF-DB's aligned crops: the similarity transform (rotation, uniform scale, "
                 "shift) mapping the face's five points (MTCNN's, in point_names order) closest "
                 "in least squares to `points` (pixel-index coordinates, (0, 0) the centre of "
                 "the top-left pixel), sampled bilinearly into a size x size crop, then resized "
                 "to image_size"},
    "opset": opset, "exporter": f"jax2onnx {importlib.metadata.version('jax2onnx')}",
    "source": meta.get("source", "")}


def export(model, variables, meta, opset=OPSET):
  """The onnx.ModelProto of uint8 images -> probabilities, weights inside, batch dynamic."""
  jax2onnx = require()
  probabilities = inference.probability_fn(model, variables, meta)
  batch, = jax.export.symbolic_shape("batch")
  size = meta["image_size"]
  spec = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
  closed = jax.make_jaxpr(probabilities)(spec)  # outside jax2onnx's patches of flax.linen

  def replayed(images):
    return _replay(closed.jaxpr, closed.consts, images)[0]

  with _quiet():
    proto = jax2onnx.to_onnx(replayed, [spec], model_name="fer_jax", opset=opset,
                             input_names=[INPUT], output_names=[OUTPUT])
  entry = proto.metadata_props.add()
  entry.key, entry.value = METADATA_KEY, json.dumps(description(meta, opset))
  return proto


def session(model):
  """An onnxruntime CPU session of a ModelProto or .onnx file."""
  import onnxruntime  # optional: the onnx extra

  source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
  return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def check(proto, model, variables, meta, count=4, seed=0):
  """The largest |onnxruntime - JAX| class probability over `count` random images, at batch
  `count` and at batch 1."""
  size = meta["image_size"]
  images = np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), np.uint8)
  want = np.asarray(jax.jit(inference.probability_fn(model, variables, meta))(images))
  run = session(proto)
  got = run.run(None, {INPUT: images})[0]
  first = run.run(None, {INPUT: images[:1]})[0]
  return float(max(np.abs(got - want).max(), np.abs(first - want[:1]).max()))


def write(proto, out):
  """Writes the model to `out` and its description (from its metadata) to `out`.json;
  FileExistsError if either exists."""
  out, sidecar = stablehlo.outputs(out)
  described = {p.key: p.value for p in proto.metadata_props}[METADATA_KEY]
  out.write_bytes(proto.SerializeToString())
  sidecar.write_text(json.dumps(json.loads(described), indent=2) + "\n")
