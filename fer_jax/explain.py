r"""Class activation map figures, as the papers show them: each image, its predicted class and
probability, and the CAM of every class (or the top `--classes`) over the face.

  python -m fer_jax.explain --checkpoint runs/eac_syn30 face1.jpg faces/ --out cams.png

The CAM of class k is the last feature map weighted by the classifier's column k (no bias),
as EAC computes it; upsampled bilinearly to the image and scaled to [0, 1] per map for
display, a translucent perceptual colour map over the grey face (the raw maxima are in the
panel titles). Models whose head reads a pooled feature (every method but RUL, whose head
reads a learned projection of the whole map) have CAMs. The library behind it is
fer_jax/cams.py.
"""

import pathlib

import numpy as np
from absl import flags

from fer_jax import cams, cli, inference


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
  paths = inference.list_images(argv[1:])[: f.max_images]  # before the model: cheaper checks first
  model, variables, meta = inference.load_model(f.checkpoint)
  images = np.stack([inference.read_image(p, meta["image_size"]) for p in paths])
  probs, maps = cams.class_activation_maps(model, variables, meta, images)
  cams.figure(paths, images, probs, maps, meta["class_names"], out, f.classes)
  print(f"wrote {out}: {len(paths)} images")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("out", "cams.png", "Figure to write (must not exist).")
  flags.DEFINE_integer("classes", 0, "Show only the top-k classes of each image (0: all).")
  flags.DEFINE_integer("max_images", 16, "At most this many images (one row each).")
  cli.run(main)
