"""Class activation maps of a model directory's classifier, and figures of them as the papers
print them: each face, its predicted class, and a translucent map per class over it.

The CAM of class k is the last feature map weighted by the classifier's column k (no bias),
as EAC computes it, upsampled bilinearly to the image. Models whose head reads a pooled
feature (every method but RUL, whose head reads a learned projection of the whole map) have
CAMs.
"""

import pathlib
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cli
from fer_jax.data import pipeline
from fer_jax.methods import eac

# The map covers the face at this opacity: the face stays readable beneath it.
ALPHA = 0.45
# Perceptually uniform, dark to bright: brightness alone says where the map is high, also in
# grey print.
COLORMAP = "inferno"
# Characters per title line at the figure's font size and panel width.
_TITLE_CHARS = 28


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


def overlay(image, cam):
  """RGB floats in [0, 1]: the grey face (so that colour means the map) under the map scaled to
  [0, 1] (its own min to max) in COLORMAP at opacity ALPHA."""
  import matplotlib  # plotting is optional at import time

  grey = (np.asarray(image, np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
  scaled = (cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-8)
  colour = matplotlib.colormaps[COLORMAP](scaled)[..., :3]
  return (1 - ALPHA) * grey[..., None] + ALPHA * colour


def wrapped(text, width=_TITLE_CHARS):
  """`text` over as many lines as it needs, every character kept."""
  return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def figure(paths, images, probs, maps, class_names, out, classes=0):
  """Writes the figure `out`: a row per image, its name (whole) and predicted class, then the
  CAM of every class or, with `classes`, of its `classes` most probable ones."""
  import matplotlib  # plotting is optional at import time

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  shown = classes or len(class_names)
  lines = max(len(wrapped(pathlib.Path(p).name).splitlines()) for p in paths)
  fig, axes = plt.subplots(len(paths), shown + 1, squeeze=False,
                           figsize=(1.7 * (shown + 1), (1.9 + 0.12 * lines) * len(paths)))
  for row, (path, image, p, cam) in enumerate(zip(paths, images, probs, maps)):
    top = int(p.argmax())
    axes[row, 0].imshow(image)
    axes[row, 0].set_title(f"{wrapped(pathlib.Path(path).name)}\n{class_names[top]} {p[top]:.2f}",
                           fontsize=7)
    order = np.argsort(-p)[:shown] if classes else range(len(class_names))
    for col, k in enumerate(order, 1):
      axes[row, col].imshow(overlay(image, cam[..., k]))
      axes[row, col].set_title(f"{wrapped(class_names[k])} p={p[k]:.2f}\n"
                               f"max {cam[..., k].max():.2f}", fontsize=7)
  for ax in axes.ravel():
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(out, dpi=150)
  plt.close(fig)
