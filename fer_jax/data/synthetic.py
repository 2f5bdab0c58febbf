"""A synthetic facial-expression dataset, drawn deterministically from a seed.

Faces with the 7 basic expressions in RAF-DB class order, varied identity (face shape, skin,
hair, feature spacing), pose (roll, shift, scale), lighting, blur and occlusion. Expressions
are prototypes scaled by a random intensity plus per-feature jitter, so the confusions of real
data appear: fear vs surprise (raised brows, open eyes and mouth), sadness vs neutral (weak
sadness is nearly neutral) and disgust vs anger (lowered brows, narrowed eyes). Every image
comes with the 19 AFLW-style landmarks of ../shared/specs/lanet.md §6, in pixels.

Image `i` depends only on (seed, i), so the train/test split is fixed.

`task="identity"` labels the faces by person instead, as a stand-in for the face-recognition
data (MS-Celeb-1M, VGGFace2) that the papers' backbones were pretrained on: `num_identities`
people (`draw_identity`: face shape, skin, hair, feature placement), each seen with random
expressions, poses, lighting and occlusions; the test split shows the same people in other
images.
"""

import logging
import math
import os
import pathlib
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fer_jax import cli, expressions, writers
from fer_jax.data import sources

CLASS_NAMES = expressions.RAF_DB
NUM_LANDMARKS = 19
# AFLW-19 points that swap under a horizontal flip (brows, eyes, nose alae, mouth corners).
FLIP_PERMUTATION = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18)

# Feature deltas from neutral: brow_raise, brow_inner, eye_open, mouth_open, mouth_curve,
# mouth_width, nose_wrinkle.
_PROTOTYPES = np.array(
  [
    [1.0, 0.2, 0.8, 1.0, 0.0, -0.3, 0.0],  # surprise
    [0.7, 0.8, 0.7, 0.5, -0.3, 0.5, 0.0],  # fear
    [-0.5, -0.3, -0.4, 0.1, -0.5, 0.0, 1.0],  # disgust
    [0.1, 0.0, -0.3, 0.4, 1.0, 0.5, 0.0],  # happiness
    [0.0, 0.8, -0.3, 0.0, -0.7, -0.1, 0.0],  # sadness
    [-0.8, -1.0, -0.2, 0.1, -0.4, -0.2, 0.3],  # anger
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # neutral
  ],
  np.float32,
)
# RAF-DB train counts per class (eac.md §4); the synthetic set uses their square roots, so it is
# imbalanced like RAF-DB (happiness most, fear least) but every class has enough examples.
_RAF_TRAIN_COUNTS = np.array([1290, 281, 717, 4772, 1982, 705, 2524])
_CANVAS = 128  # drawn at 128 px, then downsampled with antialiasing
DEFAULTS = dict(num_train=3000, num_test=700, image_size=64, seed=0, cache_dir="~/.cache/fer_jax",
                class_order="", task="expression", num_identities=0)
TASKS = ("expression", "identity")

# What makes a person, each drawn by rng in this order (draw_face draws them at their place in
# its own sequence when no identity is given, so the expression images do not depend on this
# table's existence): skin (base tone, then the green and blue ratios), face (half width and
# half height over the canvas), hair (a colour, or None: bald), and the positions of eyes, nose
# and mouth relative to the face.
_TRAITS = {
  "skin": lambda rng: (rng.uniform(120, 245), rng.uniform(0.7, 0.9), rng.uniform(0.7, 0.95)),
  "face": lambda rng: (rng.uniform(0.30, 0.38), rng.uniform(0.40, 0.47)),
  "hair": lambda rng: tuple(int(v) for v in rng.integers(10, 120, 3)) if rng.random() < 0.6
  else None,
  "eye_dx": lambda rng: rng.uniform(0.38, 0.48),
  "eye_y": lambda rng: rng.uniform(0.12, 0.22),
  "eye_w": lambda rng: rng.uniform(0.2, 0.26),
  "nose_y": lambda rng: rng.uniform(0.12, 0.2),
  "mouth_y": lambda rng: rng.uniform(0.45, 0.55),
}


def draw_identity(rng):
  """One synthetic person: the `_TRAITS` that `draw_face` takes as `identity`."""
  return {name: draw(rng) for name, draw in _TRAITS.items()}


def class_counts(num_examples):
  """Per-class example counts for a split of `num_examples` images (sums exactly)."""
  weights = np.sqrt(_RAF_TRAIN_COUNTS)
  counts = np.floor(weights / weights.sum() * num_examples).astype(int)
  counts[np.argsort(-weights)[: num_examples - counts.sum()]] += 1
  return counts


def split_labels(num_examples, seed):
  """The label of every image of a split, in a seeded random order."""
  labels = np.repeat(np.arange(len(CLASS_NAMES)), class_counts(num_examples))
  return np.random.default_rng(seed).permutation(labels).astype(np.int32)


def _curve(draw, p0, p1, p2, fill, width, steps=12):
  """Quadratic Bezier from p0 to p2 bent towards p1."""
  ts = np.linspace(0.0, 1.0, steps)[:, None]
  pts = (1 - ts) ** 2 * np.array(p0) + 2 * ts * (1 - ts) * np.array(p1) + ts**2 * np.array(p2)
  draw.line([tuple(p) for p in pts], fill=fill, width=width, joint="curve")
  return pts


def draw_face(label, rng, size=64, identity=None):
  """Draws one face with expression `label`.

  Args:
    label: class index in CLASS_NAMES order.
    rng: np.random.Generator; the only source of randomness.
    size: output side in pixels.
    identity: a person from `draw_identity`; None draws one from `rng`.

  Returns:
    (image uint8 (size, size, 3), landmarks float32 (19, 2) as (x, y) pixels).
  """
  c = _CANVAS

  def trait(name):
    return identity[name] if identity is not None else _TRAITS[name](rng)

  intensity = rng.uniform(0.5, 1.0)
  e = _PROTOTYPES[label] * intensity + rng.normal(0.0, 0.12, 7)
  brow_raise, brow_inner, eye_open, mouth_open, curve, mouth_w, wrinkle = e

  background = tuple(int(v) for v in rng.integers(40, 220, 3))
  tone, green, blue = trait("skin")
  skin = (int(tone), int(tone * green), int(tone * green * blue))
  dark = tuple(int(v * 0.35) for v in skin)
  img = Image.new("RGB", (c, c), background)
  d = ImageDraw.Draw(img)

  cx, cy = c / 2 + rng.normal(0, 2), c / 2 + rng.normal(0, 2)
  fw, fh = (v * c for v in trait("face"))
  hair = trait("hair")
  if hair is not None:
    d.ellipse([cx - fw * 1.08, cy - fh * 1.1, cx + fw * 1.08, cy + fh * 0.3], fill=hair)
  d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)

  eye_dx, eye_y = fw * trait("eye_dx"), cy - fh * trait("eye_y")
  eye_w = fw * trait("eye_w")
  eye_h = max(0.8, eye_w * 0.45 * (1.0 + 0.6 * eye_open))
  brow_y = eye_y - eye_h - fh * (0.12 + 0.08 * brow_raise)
  marks = []
  for side in (-1, 1):  # image-left face half first, as AFLW orders points
    ex = cx + side * eye_dx
    outer, inner = ex + side * eye_w * 1.3, ex - side * eye_w * 1.1
    inner_y = brow_y - fh * 0.07 * brow_inner
    mid = (ex, brow_y - fh * 0.04)
    _curve(d, (outer, brow_y + fh * 0.02), mid, (inner, inner_y), dark, 6)
    brow = [(outer, brow_y + fh * 0.02), mid, (inner, inner_y)]
    d.ellipse([ex - eye_w, eye_y - eye_h, ex + eye_w, eye_y + eye_h], fill=(245, 245, 245))
    pupil = min(eye_h, eye_w * 0.5)
    d.ellipse([ex - pupil, eye_y - pupil, ex + pupil, eye_y + pupil], fill=(30, 20, 20))
    eye = [(ex + side * eye_w, eye_y), (ex, eye_y), (ex - side * eye_w, eye_y)]
    marks.append((brow if side < 0 else brow[::-1], eye if side < 0 else eye[::-1]))

  nose_y = cy + fh * trait("nose_y")
  ala = fw * 0.18
  d.line([(cx, eye_y), (cx, nose_y)], fill=dark, width=2)
  d.line([(cx - ala, nose_y), (cx + ala, nose_y)], fill=dark, width=3)
  if wrinkle > 0.3:  # disgust raises the upper lip and wrinkles the nose
    for side in (-1, 1):
      d.line([(cx + side * ala * 1.3, nose_y - fh * 0.12), (cx + side * ala * 2, nose_y)],
             fill=dark, width=2)
  mouth_y = cy + fh * (trait("mouth_y") - 0.05 * max(wrinkle, 0))
  mw = fw * (0.42 + 0.12 * mouth_w)
  corner_y = mouth_y - fh * 0.12 * curve
  opening = fh * 0.3 * max(mouth_open, 0)
  lips = (150, 50, 60)
  upper = _curve(d, (cx - mw, corner_y), (cx, mouth_y - opening * 0.3 + fh * 0.08 * curve),
                 (cx + mw, corner_y), lips, 5)
  if opening > 1:
    lower_mid = (cx, mouth_y + opening + fh * 0.08 * curve)
    lower = _curve(d, (cx + mw, corner_y), lower_mid, (cx - mw, corner_y), lips, 5)
    d.polygon([tuple(p) for p in np.concatenate([upper, lower])], fill=(60, 10, 20), outline=lips)
  mouth_centre = (cx, float(upper[len(upper) // 2][1]) + opening / 2)
  (lb, le), (rb, re) = marks
  points = lb + rb + le + re
  points += [(cx - ala, nose_y), (cx, nose_y - 2), (cx + ala, nose_y)]
  points += [(cx - mw, corner_y), mouth_centre, (cx + mw, corner_y), (cx, cy + fh)]
  landmarks = np.array(points, np.float32)

  # Pose: roll about the face centre, then shift and scale, applied to pixels and landmarks.
  angle = rng.uniform(-15, 15)
  scale = rng.uniform(0.9, 1.1)
  shift = rng.normal(0, 3, 2)
  a = math.radians(angle)
  # Output pixel p samples input at A @ (p - centre - shift) / scale + centre.
  cos, sin = math.cos(a), math.sin(a)
  inv = np.array([[cos, sin], [-sin, cos]]) / scale
  offset = np.array([cx, cy]) - inv @ (np.array([cx, cy]) + shift)
  img = img.transform((c, c), Image.Transform.AFFINE, (*inv[0], offset[0], *inv[1], offset[1]),
                      resample=Image.Resampling.BILINEAR, fillcolor=background)
  landmarks = (landmarks - offset) @ np.linalg.inv(inv).T

  if rng.random() < 0.2:  # occlusion: a hand, a microphone, a scarf
    d = ImageDraw.Draw(img)
    ox, oy = rng.uniform(0.1, 0.9, 2) * c
    ow, oh = rng.uniform(0.1, 0.3, 2) * c
    d.rectangle([ox - ow / 2, oy - oh / 2, ox + ow / 2, oy + oh / 2],
                fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
  if rng.random() < 0.3:
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
  img = img.resize((size, size), Image.Resampling.LANCZOS)

  pixels = np.asarray(img, np.float32)
  grad = rng.normal(0, 1, 2)
  yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
  light = rng.uniform(0.6, 1.2) * (1 + 0.5 * (grad[0] * xx + grad[1] * yy) / np.hypot(*grad))
  pixels = pixels * light[..., None] + rng.normal(0, 4, pixels.shape)
  image = np.clip(pixels, 0, 255).astype(np.uint8)
  return image, (landmarks * size / c).astype(np.float32)


def generate(num_examples, seed, size=64, offset=0, people=()):
  """Draws a split: images (N, size, size, 3) uint8, labels (N,), landmarks (N, 19, 2).

  `seed` is an int or a flat sequence of ints; image i draws from the seed followed by
  offset + i (NumPy 2.5 refuses nested seed sequences, which older versions flattened). With
  `people` (from `draw_identity`) the labels are persons: image i shows person
  i % len(people), with an expression drawn as the expression split's labels are."""
  expressions = split_labels(num_examples, seed)
  seed = np.atleast_1d(seed).tolist()
  images = np.empty((num_examples, size, size, 3), np.uint8)
  landmarks = np.empty((num_examples, NUM_LANDMARKS, 2), np.float32)
  for i, expression in enumerate(expressions):
    person = people[i % len(people)] if people else None
    images[i], landmarks[i] = draw_face(expression, np.random.default_rng([*seed, offset + i]),
                                        size, person)
  if people:
    return images, np.arange(num_examples, dtype=np.int32) % len(people), landmarks
  return images, expressions, landmarks


def load(dataset_config):
  """The synthetic dataset as a `sources.Dataset`, cached as .npz under `cache_dir`.

  Fields of `dataset_config`: num_train, num_test, image_size, seed, cache_dir, task
  (expression | identity), num_identities (identity only).
  """
  c = dataset_config
  task, num_identities = c.get("task", "expression"), c.get("num_identities", 0)
  if task not in TASKS:
    raise cli.UsageError(f"config.dataset.task={task!r}: expected one of {list(TASKS)}")
  people = ()
  tag = "synthetic-v2"
  if task == "identity":
    if num_identities < 2:
      raise cli.UsageError(f"config.dataset.num_identities={num_identities}: the identity task "
                           "needs at least 2 people")
    # The same people in both splits: drawn from the dataset seed alone.
    people = [draw_identity(np.random.default_rng([c.seed, 2, j]))
              for j in range(num_identities)]
    tag = f"synthetic-identity{num_identities}-v1"
  cache = pathlib.Path(c.cache_dir).expanduser() / (
    f"{tag}-s{c.seed}-n{c.num_train}-{c.num_test}-px{c.image_size}.npz"
  )
  arrays = _read_cache(cache, c)
  if arrays is None:
    arrays = {}
    # The test split draws from a disjoint index range of the same seed: a fixed split.
    for split, n, offset in (("train", c.num_train, 0), ("test", c.num_test, 10**7)):
      images, labels, landmarks = generate(n, [c.seed, offset], c.image_size, offset, people)
      arrays.update({f"{split}_images": images, f"{split}_labels": labels,
                     f"{split}_landmarks": landmarks})
    cache.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name, then an atomic rename: concurrent runs sharing the
    # cache never write into one file, and a reader never sees half a file.
    writers.write_atomically(cache, lambda tmp: _save(tmp, arrays),
                             sum(a.nbytes for a in arrays.values()) + 2**16,
                             "the synthetic dataset's cache", "nothing else is written")

  def split(name):
    labels = arrays[f"{name}_labels"]
    store = sources.ArrayStore(arrays[f"{name}_images"], arrays[f"{name}_landmarks"])
    names = tuple(f"{name}_{i:05d}" for i in range(len(labels)))
    return sources.LabelledSource(store, labels, names)

  # Label files write RAF-DB's 1-based labels, as the synthetic set uses RAF-DB's class order.
  names = tuple(f"person_{j:04d}" for j in range(len(people))) if people else CLASS_NAMES
  return sources.Dataset("synthetic", names, split("train"), split("test"),
                         label_format="one_based", source=str(cache))


def _save(path, arrays):
  with open(path, "wb") as f:  # a file object: np.savez would append .npz to the name
    np.savez(f, **arrays)


def _read_cache(cache, c):
  """The arrays of `cache`, or None when there is none or it fails to read (a truncated or
  damaged file: then it is made again, with a warning naming it)."""
  if not cache.exists():
    return None
  sizes = {"train": c.num_train, "test": c.num_test}
  try:
    with np.load(cache) as f:
      arrays = {k: f[k] for k in f.files}  # reads every array in full
    for split, n in sizes.items():
      if any(len(arrays[f"{split}_{field}"]) != n for field in ("images", "labels", "landmarks")):
        raise ValueError(f"the {split} split does not hold {n} examples")
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
    logging.warning("The synthetic dataset's cache %s cannot be read (%s: %s); making it again",
                    cache, type(e).__name__, str(e)[:200])
    return None
  return arrays


def _write_faces(task):
  """Writes the JPEG faces of one chunk of a split (a worker process's share)."""
  paths, labels, seed, offsets, size = task
  for path, label, offset in zip(paths, labels, offsets):
    image, _ = draw_face(int(label), np.random.default_rng([*seed, int(offset)]), size)
    Image.fromarray(image).save(path, quality=95)
  return len(paths)


def write_raf_db(root, num_train, num_test, size=100, seed=0, workers=None):
  """Writes synthetic faces as a RAF-DB copy (`raf_db.LAYOUT`: aligned JPEGs of `size` px and
  EmoLabel/list_patition_label.txt): data of RAF-DB's size and format for benchmarks and
  end-to-end runs of the real input path. Train and test draw from disjoint index ranges."""
  import concurrent.futures  # noqa: PLC0415 (only this writer needs it)

  root = pathlib.Path(root)
  (root / "Image/aligned").mkdir(parents=True, exist_ok=True)
  (root / "EmoLabel").mkdir(exist_ok=True)
  lines, tasks = [], []
  for split, n, offset in (("train", num_train, 0), ("test", num_test, 10**7)):
    labels = split_labels(n, [seed, offset])
    width = 5 if split == "train" else 4  # RAF-DB's names: train_00001, test_0001
    names = [f"{split}_{i:0{width}d}" for i in range(1, n + 1)]
    lines += [f"{name}.jpg {label + 1}" for name, label in zip(names, labels)]
    paths = [root / "Image/aligned" / f"{name}_aligned.jpg" for name in names]
    for lo in range(0, n, 500):
      tasks.append((paths[lo:lo + 500], labels[lo:lo + 500], [seed, offset],
                    range(offset + lo, offset + min(n, lo + 500)), size))
  with concurrent.futures.ProcessPoolExecutor(workers or os.cpu_count()) as pool:
    written = sum(pool.map(_write_faces, tasks))
  (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
  return written


if __name__ == "__main__":
  import argparse

  parser = argparse.ArgumentParser(description="Write synthetic faces in RAF-DB's layout.")
  parser.add_argument("--raf_db_dir", required=True, help="where to write the copy")
  parser.add_argument("--num_train", type=int, default=12271, help="RAF-DB's train size")
  parser.add_argument("--num_test", type=int, default=3068, help="RAF-DB's test size")
  parser.add_argument("--size", type=int, default=100, help="RAF-DB's aligned faces: 100 px")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  count = write_raf_db(args.raf_db_dir, args.num_train, args.num_test, args.size, args.seed)
  print(f"{count} images in {args.raf_db_dir}")
