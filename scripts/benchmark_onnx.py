r"""Latency on the CPU of a model exported as ONNX (fer_jax/deploy/onnx_export.py, run by onnxruntime)
beside the same model in JAX (jit of inference.probability_fn): one markdown row per batch and
image size, for a randomly initialised ResNet-18 (the weights do not change the time).

  python scripts/benchmark_onnx.py [--width 64] [--sizes 112,224] [--batches 1,32] [--repeats 10]

Both take uint8 images and return probabilities; both use every core (their defaults). Times
are the median wall-clock ms per batch after one warm-up; CPU ms (process time, all threads)
per batch beside them is what a busy machine cannot hide. Needs the `onnx` extra.
"""

import datetime
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_jax import inference
from fer_jax.deploy import onnx_export
from fer_jax.models import resnet
from scripts import machine  # noqa: E402

flags.DEFINE_integer("width", 64, "ResNet-18 width (64: the real network).")
flags.DEFINE_list("sizes", ["112", "224"], "Image sides in pixels.")
flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
flags.DEFINE_integer("repeats", 10, "Timed batches per row and runtime (after one warm-up).")

HEADER = ("| date | CPU | cores | batch | image size | JAX ms | ONNX Runtime ms | JAX CPU ms | "
          "ONNX Runtime CPU ms |\n|---|---|---|---|---|---|---|---|---|")


def timed(run, images, repeats):
  """(median wall ms, median process-time ms) of `run(images)` after one warm-up call."""
  run(images)
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    run(images)
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def runners(size, width):
  """(JAX, onnxruntime) functions of uint8 images -> probabilities, for a random ResNet-18 with
  7 classes at `size` px."""
  model = resnet.Classifier("resnet18", 7, width)
  variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  meta = {"arch": "resnet18", "width": width, "num_classes": 7, "class_names": list("abcdefg"),
          "image_size": size, "mean": [0.5] * 3, "std": [0.25] * 3}
  session = onnx_export.session(onnx_export.export(model, variables, meta))
  probabilities = jax.jit(inference.probability_fn(model, variables, meta))

  def run_jax(images):
    return np.asarray(probabilities(images))

  def run_onnx(images):
    return session.run(None, {onnx_export.INPUT: images})[0]

  return run_jax, run_onnx


def main(argv):
  del argv
  f = flags.FLAGS
  onnx_export.require()
  rows = []
  for size in map(int, f.sizes):
    run_jax, run_onnx = runners(size, f.width)
    for batch in map(int, f.batches):
      images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
      jax_ms, jax_cpu = timed(run_jax, images, f.repeats)
      ort_ms, ort_cpu = timed(run_onnx, images, f.repeats)
      rows.append(f"| {datetime.date.today()} | {machine.cpu_name()} | {os.cpu_count()} | "
                  f"{batch} | "
                  f"{size} | {jax_ms:.1f} | {ort_ms:.1f} | {jax_cpu:.1f} | {ort_cpu:.1f} |")
      print(rows[-1], file=sys.stderr, flush=True)
  import onnxruntime  # the onnx extra; onnx_export.require() said so if it is absent

  print(f"ResNet-18 width {f.width}, jax {jax.__version__}, onnxruntime "
        f"{onnxruntime.__version__}\n")
  print(HEADER)
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
