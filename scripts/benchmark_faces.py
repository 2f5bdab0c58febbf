r"""Face detection + alignment throughput on the CPU (fer_jax/inference/faces.py): images/s for scenes
made of scikit-image's astronaut portrait, one markdown row per scene size.

  python scripts/benchmark_faces.py [--sizes 512,1024] [--faces 1,4] [--repeats 10] \
      [--checkpoint DIR | --checkpoint random]

With --checkpoint, every face is also classified (inference.FacePredictor, what `predict
--detect_faces` runs per photo): a model directory, or `random` for a ResNet-18 of width 64 at
112 px with random weights.

A scene of side S with F faces tiles F copies of the portrait (mirrored every other one) in a
grey canvas, each scaled to fill its tile; every face found is aligned to 100 px. Needs the
`faces` extra and scikit-image.
"""

import datetime
import os
import pathlib
import sys
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fer_jax.inference import faces
from scripts import machine  # noqa: E402

flags.DEFINE_list("sizes", ["512", "1024"], "Scene sides in pixels.")
flags.DEFINE_list("faces", ["1", "4"], "Faces per scene (a square number: tiles per side^2).")
flags.DEFINE_integer("repeats", 10, "Timed passes over each scene (after one warm-up).")
flags.DEFINE_integer("min_face_size", 20, "detect's min_face_size.")
flags.DEFINE_string("checkpoint", "", "Also classify the faces with this model directory "
                    "(`random`: ResNet-18, width 64, 112 px, random weights).")

# CPU ms/image (process time, all threads) is what a busy machine cannot hide: wall-clock
# images/s there depends on what else runs.
HEADER = ("| date | CPU | threads | image size | faces per image | found | images/s | "
          "CPU ms/image |\n|---|---|---|---|---|---|---|---|")


def scene(size, count):
  """A (size, size, 3) grey canvas holding `count` astronaut portraits on a square grid."""
  import skimage.data  # a test and benchmark dependency only

  per_side = round(count ** 0.5)
  if per_side * per_side != count:
    raise app.UsageError(f"--faces={count}: expected a square number (1, 4, 9, ...)")
  tile = size // per_side
  portrait = Image.fromarray(skimage.data.astronaut()).resize((tile, tile))
  canvas = np.full((size, size, 3), 128, np.uint8)
  for k in range(count):
    row, col = divmod(k, per_side)
    pixels = np.asarray(portrait)
    canvas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = (
      pixels[:, ::-1] if k % 2 else pixels)
  return canvas


def predictor(checkpoint, min_face_size):
  """The FacePredictor of `checkpoint` (see --checkpoint)."""
  import jax  # noqa: PLC0415 (only with --checkpoint)

  from fer_jax import expressions, inference  # noqa: PLC0415
  from fer_jax.models import resnet  # noqa: PLC0415

  if checkpoint != "random":
    return inference.FacePredictor(*inference.load_model(checkpoint), min_face_size=min_face_size)
  model = resnet.Classifier("resnet18", len(expressions.RAF_DB), 64)
  variables = model.init(jax.random.key(0), np.zeros((1, 112, 112, 3), np.float32))
  meta = {"image_size": 112, "num_classes": len(expressions.RAF_DB),
          "class_names": list(expressions.RAF_DB), "mean": [0.485, 0.456, 0.406],
          "std": [0.229, 0.224, 0.225]}
  return inference.FacePredictor(model, variables, meta, min_face_size=min_face_size)


def measure(image, repeats, min_face_size, classify=None):
  """(faces found, images/s, CPU seconds per image) of detect + align of every face (and, with
  `classify`, a FacePredictor, their class probabilities)."""

  def once():
    if classify is not None:
      return len(classify(image))
    found = faces.detect(image, min_face_size=min_face_size)
    for face in found:
      faces.align(image, face.points)
    return len(found)

  found = once()  # warm-up: loads the networks, sizes onnxruntime's buffers
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(repeats):
    once()
  return (found, repeats / (time.perf_counter() - start),
          (time.process_time() - cpu) / repeats)


def main(argv):
  del argv
  f = flags.FLAGS
  classify = predictor(f.checkpoint, f.min_face_size) if f.checkpoint else None
  print(HEADER)
  for size in map(int, f.sizes):
    for count in map(int, f.faces):
      found, rate, cpu = measure(scene(size, count), f.repeats, f.min_face_size, classify)
      print(f"| {datetime.date.today()} | {machine.cpu_name()} | {os.cpu_count()} | "
            f"{size}x{size} | "
            f"{count} | {found} | {rate:.2f} | {1000 * cpu:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
