r"""Class probabilities for face images from a trained or converted model, or for every face
found in raw photos and videos.

  python -m fer_jax.predict --checkpoint runs/baseline/model face1.jpg faces/ --output preds.csv
  python -m fer_jax.predict --checkpoint runs/baseline/model --detect_faces party.jpg clip.mp4 \
      --output faces.csv [--annotate_dir annotated] [--crops_dir crops] [--frame_stride 5] \
      [--min_face_size 20] [--score_threshold 0.9]

`--checkpoint` is a model directory (`<workdir>/model` after training, or a
`python -m fer_jax.convert` output) or a training workdir (its `model/` is used). Images are
preprocessed with the model's recorded eval transform: RGB, bilinear resize to its image
size, normalisation with its mean/std. The CSV has one row per image: path, one probability
column per class in the model's class order, and the predicted class.

--detect_faces (the `faces` extra) takes photos and videos (directories are searched for both)
and finds the faces in each photo and in every --frame_stride-th video frame (MTCNN), aligns
each to a 100 px crop in RAF-DB's framing, as the training crops are, then applies the eval
transform. The CSV has one row per face: path, frame (the video frame's index from 0; empty
for a photo), faces (how many in that photo or frame), face (0 the largest), box_x, box_y,
box_w, box_h (pixels), score (MTCNN's), one probability column per class, and predicted. A photo
or frame without a face has one row with faces 0 and the rest empty: every frame read is in
the table. --annotate_dir gets a copy of each photo (`<name>.jpg`) and of each frame read
(`<video name>/frame<NNNNNN>.jpg`) with each face's box and "class probability"; --crops_dir
gets the aligned crops (`<name>_face<k>.png`, `<video name>/frame<NNNNNN>_face<k>.png`). Names
are the inputs' paths below their common folder, without suffix. No output may exist: the
directories are written beside their final names and renamed at the end.

The library behind it is fer_jax/inference.py (FacePredictor) and fer_jax/media.py.
"""

import collections
import contextlib
import csv
import os
import pathlib
import shutil
import tempfile

import numpy as np
from absl import flags
from PIL import Image

from fer_jax import cli, inference, media

FACE_COLUMNS = ["path", "frame", "faces", "face", "box_x", "box_y", "box_w", "box_h", "score"]
# Flags that only --detect_faces reads: refused without it rather than silently ignored.
FACE_FLAGS = ("annotate_dir", "crops_dir", "frame_stride", "min_face_size", "score_threshold")


def write_csv(path, image_paths, probabilities, class_names):
  """One row per image: its path, a probability per class, the predicted class."""
  path = pathlib.Path(path)
  with open(path, "x", newline="") as f:  # "x": never overwrite earlier results
    w = csv.writer(f)
    w.writerow(["path", *class_names, "predicted"])
    for p, row in zip(image_paths, probabilities):
      w.writerow([str(p), *(f"{v:.6f}" for v in row), class_names[int(np.argmax(row))]])


# --- faces of photos and videos ---------------------------------------------------------------
def face_rows(path, frame, predictions, class_names):
  """The CSV rows of one photo or frame: one per face, or one saying it has none."""
  where = [str(path), "" if frame is None else frame, len(predictions)]
  if not predictions:
    return [where + [""] * (len(FACE_COLUMNS) - len(where) + len(class_names) + 1)]
  return [where + [k, *(f"{v:.2f}" for v in p.face.box), f"{p.face.score:.6f}",
                   *(f"{v:.6f}" for v in p.probabilities),
                   class_names[int(np.argmax(p.probabilities))]]
          for k, p in enumerate(predictions)]


def label(prediction, class_names):
  """(box, "class probability", class index) of a face, for media.draw_boxes."""
  top = int(np.argmax(prediction.probabilities))
  text = f"{class_names[top]} {prediction.probabilities[top]:.2f}"
  return prediction.face.box, text, top


@contextlib.contextmanager
def _staged(directories):
  """Temporary directories beside each of `directories` (None stays None), renamed to them
  when the block ends without an error and removed when it raises: a stopped run leaves no
  half output that a rerun would refuse."""
  staged = []
  try:
    for directory in directories:
      if directory is None:
        staged.append(None)
        continue
      directory = pathlib.Path(directory)
      directory.parent.mkdir(parents=True, exist_ok=True)
      staged.append(pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.",
                                                  dir=directory.parent)))
    yield staged
    for work, directory in zip(staged, directories):
      if work is not None:
        if pathlib.Path(directory).exists():  # rename would replace an empty directory
          raise FileExistsError(f"{directory}: appeared while predicting; not overwritten")
        os.rename(work, directory)
  finally:
    for work in staged:
      if work is not None:
        shutil.rmtree(work, ignore_errors=True)


def check_outputs(output, annotate_dir=None, crops_dir=None, inputs=()):
  """Raises UsageError for an output that exists, or a directory inside an input directory
  (its files would be read as inputs next time)."""
  if annotate_dir and crops_dir and pathlib.Path(annotate_dir) == pathlib.Path(crops_dir):
    raise cli.UsageError(f"--annotate_dir and --crops_dir are both {annotate_dir}; give two "
                         "directories")
  for name, path in (("output", output), ("annotate_dir", annotate_dir),
                     ("crops_dir", crops_dir)):
    if path is None:
      continue
    if pathlib.Path(path).exists():
      raise cli.UsageError(f"--{name}={path} exists; choose another (outputs are never "
                           "overwritten)")
    for source in map(pathlib.Path, inputs):
      if name != "output" and source.is_dir() and (
          pathlib.Path(path).resolve().is_relative_to(source.resolve())):
        raise cli.UsageError(f"--{name}={path} is inside the input directory {source}; its "
                             "images would be read as inputs next time")


def write_face_predictions(predictor, paths, output, annotate_dir=None, crops_dir=None,
                           stride=1):
  """Writes the CSV `output` of every face in the photos and videos `paths` (videos at every
  `stride`-th frame), and the annotated copies and aligned crops when their directories are
  given (see the module docstring). Returns counts: photos, videos, frames, faces, empty."""
  check_outputs(output, annotate_dir, crops_dir)
  class_names = predictor.meta["class_names"]
  rows, counts = [], collections.Counter(photos=0, videos=0, frames=0, faces=0, empty=0)
  with _staged([annotate_dir, crops_dir]) as (annotated, crops):
    for path, stem in zip(paths, media.output_stems(paths)):
      counts["videos" if media.is_video(path) else "photos"] += 1
      for frame, image in media.read_frames(path, stride):
        found = predictor(image)
        rows += face_rows(path, frame, found, class_names)
        counts["frames"] += frame is not None
        counts["faces"] += len(found)
        counts["empty"] += not found
        name = stem if frame is None else stem / f"frame{frame:06d}"
        if annotated is not None:
          _save(media.draw_boxes(image, [label(p, class_names) for p in found]),
                annotated / f"{name}.jpg")
        for k, p in enumerate(found if crops is not None else ()):
          _save(p.crop, crops / f"{name}_face{k}.png")
    with open(output, "x", newline="") as f:  # "x": never overwrite earlier results
      writer = csv.writer(f)
      writer.writerow([*FACE_COLUMNS, *class_names, "predicted"])
      writer.writerows(rows)
  return dict(counts)


def _save(pixels, path):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))


# --- command ----------------------------------------------------------------------------------
def _predict_faces(f, inputs):
  if f.frame_stride < 1 or f.min_face_size < 1:
    raise cli.UsageError(f"--frame_stride={f.frame_stride} --min_face_size={f.min_face_size}: "
                         "expected positive numbers")
  check_outputs(f.output, f.annotate_dir, f.crops_dir, inputs)
  paths = media.list_files(inputs, media.IMAGE_SUFFIXES + media.VIDEO_SUFFIXES,
                           "images or videos")
  for path in filter(media.is_video, paths):  # before the model: the cheaper checks first
    media.check_video(path)
  model, variables, meta = inference.load_model(f.checkpoint)
  predictor = inference.FacePredictor(model, variables, meta, f.min_face_size,
                                      f.score_threshold, f.batch_size)
  c = write_face_predictions(predictor, paths, f.output, f.annotate_dir, f.crops_dir,
                             f.frame_stride)
  print(f"{_n(c['faces'], 'face')} in {_n(c['photos'], 'photo')} and {_n(c['frames'], 'frame')} "
        f"of {_n(c['videos'], 'video')}, {c['empty']} of them without a face; wrote {f.output}"
        + "".join(f" and {d}" for d in (f.annotate_dir, f.crops_dir) if d))


def _n(count, noun):
  return f"{count} {noun}{'' if count == 1 else 's'}"


def main(argv):
  f = flags.FLAGS
  if len(argv) < 2:
    raise cli.UsageError("give at least one image file or directory")
  if f.detect_faces:
    return _predict_faces(f, argv[1:])
  given = [name for name in FACE_FLAGS if f[name].present]
  if given:
    raise cli.UsageError(f"--{given[0]} needs --detect_faces (faces found in raw photos)")
  if pathlib.Path(f.output).exists():
    raise cli.UsageError(f"--output={f.output} exists; choose another --output")
  paths = inference.list_images(argv[1:])  # before the model: the cheaper checks first
  videos = [p for p in paths if media.is_video(p)]
  if videos:
    raise cli.UsageError(f"{videos[0]}: a video; give --detect_faces to predict the faces of "
                         "its frames")
  model, variables, meta = inference.load_model(f.checkpoint)
  probabilities = inference.predict(model, variables, meta, paths, f.batch_size)
  write_csv(f.output, paths, probabilities, meta["class_names"])
  print(f"wrote {len(paths)} predictions to {f.output}")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.")
  flags.DEFINE_string("output", "predictions.csv", "CSV to write (must not exist).")
  flags.DEFINE_integer("batch_size", 64, "Images (faces) per forward pass.")
  flags.DEFINE_bool("detect_faces", False, "Find, align and classify every face of raw photos "
                    "and videos (the faces extra); one CSV row per face.")
  flags.DEFINE_string("annotate_dir", None, "--detect_faces: directory to create for copies of "
                      "the photos and frames with boxes and labels.")
  flags.DEFINE_string("crops_dir", None, "--detect_faces: directory to create for the aligned "
                      "face crops.")
  flags.DEFINE_integer("frame_stride", 1, "--detect_faces: read every Nth video frame.")
  flags.DEFINE_integer("min_face_size", 20, "--detect_faces: smallest face (box side, px).")
  flags.DEFINE_float("score_threshold", 0.9, "--detect_faces: smallest MTCNN score kept.")
  flags.mark_flags_as_required(["checkpoint"])
  cli.run(main)
