r"""Class activation map figures, as the papers show them: each image, its predicted class and
probability, and the CAM of every class (or the top `--classes`) overlaid.

  python -m fer_jax.explain --checkpoint runs/eac_syn30 face1.jpg faces/ --out cams.png

The CAM of class k is the last feature map weighted by the classifier's column k (no bias),
as EAC computes it; upsampled bilinearly to the image and scaled to [0, 1] per map for
display (the raw maxima are in the panel titles). Models whose head reads a pooled feature
(every method but RUL, whose head reads a learned projection of the whole map) have CAMs.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from fer_jax import cli, predict
from fer_jax.data import pipeline
from fer_jax.methods import eac


def class_activation_maps(model, variables, meta, images):
  """(probabilities (N, C), CAMs (N, H, W, C) at the image size) of uint8 images (N, H, W, 3)."""
  if meta.get("neck", "pool") != "pool":
    raise cli.UsageError(f"a model with neck {meta['neck']!r} has no class activation maps: its "
                         "classifier does not read the average of the last feature map")
  x = pipeline.to_model_input({"image": jnp.asarray(images)}, meta["mean"], meta["std"])["image"]
  logits, feats = model.apply(variables, x, train=False)
  kernel = variables["params"]["head"]["kernel"]
  maps = eac.class_activation_maps(feats["stage4"], kernel)
  maps = jax.image.resize(maps, (*images.shape[:3], maps.shape[-1]), "bilinear")
  return np.asarray(jax.nn.softmax(logits, -1)), np.asarray(maps)


def figure(paths, images, probs, maps, class_names, out, classes=0):
  import matplotlib  # noqa: PLC0415 (plotting is optional at import time)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  shown = classes or len(class_names)
  fig, axes = plt.subplots(len(paths), shown + 1, figsize=(1.7 * (shown + 1), 1.9 * len(paths)),
                           squeeze=False)
  for row, (path, image, p, cam) in enumerate(zip(paths, images, probs, maps)):
    top = int(p.argmax())
    axes[row, 0].imshow(image)
    axes[row, 0].set_title(f"{pathlib.Path(path).name[:18]}\n{class_names[top]} {p[top]:.2f}",
                           fontsize=7)
    order = np.argsort(-p)[:shown] if classes else range(len(class_names))
    for col, k in enumerate(order, 1):
      m = cam[..., k]
      scaled = (m - m.min()) / max(float(m.max() - m.min()), 1e-8)
      axes[row, col].imshow(image)
      axes[row, col].imshow(scaled, cmap="jet", alpha=0.45)
      axes[row, col].set_title(f"{class_names[k]} p={p[k]:.2f}\nmax {m.max():.2f}", fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)


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
  paths = predict.list_images(argv[1:])[: f.max_images]  # before the model: cheaper checks first
  model, variables, meta = predict.load_model(f.checkpoint)
  images = np.stack([predict.read_image(p, meta["image_size"]) for p in paths])
  probs, maps = class_activation_maps(model, variables, meta, images)
  figure(paths, images, probs, maps, meta["class_names"], out, f.classes)
  print(f"wrote {out}: {len(paths)} images")


if __name__ == "__main__":
  flags.DEFINE_string("checkpoint", None, "Model directory or training workdir.", required=True)
  flags.DEFINE_string("out", "cams.png", "Figure to write (must not exist).")
  flags.DEFINE_integer("classes", 0, "Show only the top-k classes of each image (0: all).")
  flags.DEFINE_integer("max_images", 16, "At most this many images (one row each).")
  cli.run(main)
