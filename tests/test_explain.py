"""CAM figures from an exported model: maps, the translucent overlay, whole image names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fer_jax import inference
from fer_jax.inference import cams
from fer_jax.models import resnet, weights


def _model_dir(tmp_path, neck="pool"):
  model = resnet.Classifier("resnet18", 3, 8, neck=neck)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  weights.save(tmp_path / "m", variables, {
    "arch": "resnet18", "width": 8, "num_classes": 3, "class_names": ["a", "b", "c"],
    "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "has_head": True, "neck": neck})
  return tmp_path / "m"


def test_maps_cover_the_image_and_figure_is_written(tmp_path):
  directory = _model_dir(tmp_path)
  images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), np.uint8)
  for i, image in enumerate(images):
    Image.fromarray(image).save(tmp_path / f"{i}.png")
  paths = inference.list_images([tmp_path])
  model, variables, meta = inference.load_model(directory)
  probs, maps = cams.class_activation_maps(model, variables, meta, images)
  assert maps.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(probs, inference.predict(model, variables, meta, paths), atol=1e-5)
  # The map's mean plus the bias is the logit (upsampling keeps the mean on a 32 -> 1x1 map).
  logits = np.log(probs)
  centred = maps.mean((1, 2)) + np.asarray(variables["params"]["head"]["bias"])
  np.testing.assert_allclose(centred - centred.mean(1, keepdims=True),
                             logits - logits.mean(1, keepdims=True), atol=1e-4)
  cams.figure(paths, images, probs, maps, meta["class_names"], tmp_path / "cams.png", 2)
  assert (tmp_path / "cams.png").stat().st_size > 0


def test_the_face_shows_under_the_map_and_names_stay_whole():
  image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)
  cam = np.zeros((8, 8))
  cam[2:4, 2:4] = 5.0
  shown = cams.overlay(image, cam)
  grey = image @ np.array([0.299, 0.587, 0.114]) / 255
  assert shown.shape == (8, 8, 3) and 0 <= shown.min() and shown.max() <= 1
  # Where the map is equal, the face's own contrast is what varies, at 1 - ALPHA.
  low = cam == 0
  contrast = (1 - cams.ALPHA) * (grey[low] - grey[low].mean())
  np.testing.assert_allclose(shown[low] - shown[low].mean(0), np.stack([contrast] * 3, 1),
                             atol=1e-5)
  assert shown[2:4, 2:4].mean() > shown[low].mean()  # a high map is bright in the colormap
  name = "train_00001_aligned_with_a_very_long_suffix_from_a_crawler.jpg"
  lines = cams.wrapped(name).splitlines()
  assert len(lines) > 1 and "".join(lines) == name
  assert cams.wrapped("a.jpg") == "a.jpg"


def test_a_model_without_pooled_head_has_no_maps(tmp_path):
  model, variables, meta = inference.load_model(_model_dir(tmp_path, "uncertainty"))
  with pytest.raises(ValueError, match="no class activation maps"):
    cams.class_activation_maps(model, variables, meta, np.zeros((1, 32, 32, 3), np.uint8))
