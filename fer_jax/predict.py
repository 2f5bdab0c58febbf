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

The library behind it is fer_jax/inference/ (`FacePredictor`, outputs.py) and
fer_jax/data/media.py.
"""

import pathlib

from absl import flags

from fer_jax import cli, inference
from fer_jax.data import media
from fer_jax.inference import outputs

# Flags that only --detect_faces reads: refused without it rather than silently ignored.
FACE_FLAGS = ("annotate_dir", "crops_dir", "frame_stride", "min_face_size", "score_threshold")


def _predict_faces(f, inputs):
  if f.frame_stride < 1 or f.min_face_size < 1:
    raise cli.UsageError(f"--frame_stride={f.frame_stride} --min_face_size={f.min_face_size}: "
                         "expected positive numbers")
  outputs.check_outputs(f.output, f.annotate_dir, f.crops_dir, inputs)
  paths = media.list_files(inputs, media.IMAGE_SUFFIXES + media.VIDEO_SUFFIXES,
                           "images or videos")
  for path in filter(media.is_video, paths):  # before the model: the cheaper checks first
    media.check_video(path)
  model, variables, meta = inference.load_model(f.checkpoint)
  predictor = inference.FacePredictor(model, variables, meta, f.min_face_size,
                                      f.score_threshold, f.batch_size)
  c = outputs.write_face_predictions(predictor, paths, f.output, f.annotate_dir, f.crops_dir,
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
  outputs.write_csv(f.output, paths, probabilities, meta["class_names"])
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
