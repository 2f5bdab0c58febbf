r"""Class activation map figures, as the papers show them: each image, its predicted class and
probability, and the CAM of every class (or the top `--classes`) over the face.

  python -m fer_jax.explain --checkpoint runs/eac_syn30 face1.jpg faces/ --out cams.png

The CAM of class k is the last feature map weighted by the classifier's column k (no bias),
as EAC computes it; upsampled bilinearly to the image and scaled to [0, 1] per map for
display, a translucent perceptual colour map over the grey face (the raw maxima are in the
panel titles). Models whose head reads a pooled feature (every method but RUL, whose head
reads a learned projection of the whole map) have CAMs.

--detect_faces (the `faces` extra) takes raw photos instead: each face MTCNN finds is aligned as
`python -m fer_jax.predict --detect_faces` aligns it (a 100 px crop in RAF-DB's framing, then the
eval resize), and gets its own row, titled `<image> face <k>` (0 the largest), in the one figure;
--max_images then counts faces. --min_face_size and --score_threshold are the detector's.

The library behind it is fer_jax/inference/cams.py (and `inference.face_crops`).
"""

import pathlib

import numpy as np
from absl import flags

from fer_jax import cli, inference
from fer_jax.inference import cams


def main(argv):
  f = flags.FLAGS
  if len(argv) < 2:
    raise cli.UsageError("give at least one image file or directory")
  if f.max_images < 1 or f.classes < 0:
    raise cli.UsageError(f"--max_images={f.max_images} --classes={f.classes}: expected "
                         "max_images >= 1 and classes >= 0")
  out = pathlib.Path(f.out)
  if out.exists():
    raise cli.UsageError(f"--out={out} exists; choose another --out")
  if f.detect_faces:
    return _explain_faces(f, argv[1:], out)
  given = [name for name in ("min_face_size", "score_threshold") if f[name].present]
  if given:
    raise cli.UsageError(f"--{given[0]} needs --detect_faces (faces found in raw photos)")
  paths = inference.list_images(argv[1:])[: f.max_images]  # before the model: cheaper checks first
  model, variables, meta = inference.load_model(f.checkpoint)
  images = np.stack([inference.read_image(p, meta["image_size"]) for p in paths])
  probs, maps = cams.class_activation_maps(model, variables, meta, images)
  cams.figure(paths, images, probs, maps, meta["class_names"], out, f.classes)
  print(f"wrote {out}: {len(paths)} images")


def _explain_faces(f, inputs, out):
  if f.min_face_size < 1:
    raise cli.UsageError(f"--min_face_size={f.min_face_size}: expected a positive size (px)")
  paths = inference.list_images(inputs)
  model, variables, meta = inference.load_model(f.checkpoint)
  names, crops, empty = inference.face_crops(paths, f.max_images, f.min_face_size, f.score_threshold)
  if not crops:
    raise cli.UsageError(f"no face found in {len(paths)} images ({', '.join(map(str, inputs))}); "
                         "a smaller --min_face_size or --score_threshold finds more")
  images = np.stack([inference.resize(crop, meta["image_size"]) for crop in crops])
  probs, maps = cams.class_activation_maps(model, variables, meta, images)
  cams.figure(names, images, probs, maps, meta["class_names"], out, f.classes)
  print(f"wrote {out}: {len(names)} faces" + (f"; images without a face: {len(empty)}"
                                              if empty else ""))


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("out", "cams.png", "Figure to write (must not exist).")
  flags.DEFINE_integer("classes", 0, "Show only the top-k classes of each image (0: all).")
  flags.DEFINE_integer("max_images", 16, "At most this many images, or faces with "
                       "--detect_faces (one row each).")
  flags.DEFINE_bool("detect_faces", False, "A row per face found in raw photos (the faces "
                    "extra), each aligned as for training.")
  flags.DEFINE_integer("min_face_size", 20, "--detect_faces: smallest face (box side, px).")
  flags.DEFINE_float("score_threshold", 0.9, "--detect_faces: smallest MTCNN score kept.")
  cli.run(main)
