"""Host ops and the on-device half of preprocessing."""


import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.data import pipeline, synthetic
from tests import host_ops
from tests import torchvision_draws as draws


def _example(seed=0, size=64):
  image, landmarks = synthetic.draw_face(3, np.random.default_rng(seed), size)
  return {"image": image, "label": np.int32(3), "landmarks": landmarks}


def test_reference_box_draws_follow_torchvision():
  """The box draws of the reference ops (which the device tests replay) against the exact
  distributions of torchvision's get_params (tests/torchvision_draws.py)."""
  h, w, n = 24, 20, 6000
  rng = np.random.default_rng(0)
  erase = host_ops.random_erasing(scale=(0.02, 0.25))
  boxes = np.array([erase({"image": np.zeros((h, w, 3), np.uint8)}, rng)["image_erase"]
                    for _ in range(n)])
  probs = draws.erasing_sizes(h, w, (0.02, 0.25), (0.3, 3.3), 0.5)
  assert draws.categorical(boxes[:, 2:], probs) > draws.P_MIN
  fired = boxes[:, 2] > 0
  assert draws.uniform_offsets(boxes[fired, 0], h - boxes[fired, 2] + 1) > draws.P_MIN
  # The crop, read back from two landmarks at (0, 0) and (1, 1): moved by -(left, top) and
  # scaled by size / (width, height).
  crop = host_ops.random_resized_crop(8, scale=(0.6, 1.0), ratio=(0.5, 0.8))
  ex = {"image": np.zeros((h, w, 3), np.uint8),
        "landmarks": np.array([[0, 0], [1, 1]], np.float32)}
  points = np.array([crop(ex, rng)["landmarks"] for _ in range(n)], np.float64)
  cw, ch = np.round(8 / (points[:, 1] - points[:, 0])).astype(int).T
  assert draws.categorical(np.stack([ch, cw], -1), draws.crop_sizes(h, w, (0.6, 1.0), (0.5, 0.8))
                           ) > draws.P_MIN


def test_erased_pixels_are_zero_after_normalisation():
  images = np.full((2, 8, 8, 3), 200, np.uint8)
  boxes = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.int32)
  out = pipeline.to_model_input({"image": jnp.asarray(images), "image_erase": jnp.asarray(boxes)})
  x = np.asarray(out["image"])
  inside = np.zeros((8, 8), bool)
  inside[1:4, 2:6] = True
  assert (x[0][inside] == 0).all()
  expected = (200 / 255 - np.array(pipeline.IMAGENET_MEAN)) / np.array(pipeline.IMAGENET_STD)
  np.testing.assert_allclose(x[0][~inside], np.broadcast_to(expected, (52, 3)), rtol=1e-6)
  np.testing.assert_allclose(x[1], np.broadcast_to(expected, (8, 8, 3)), rtol=1e-6)


def test_flip_mirrors_pixels_and_landmarks_and_is_an_involution():
  ex = _example()
  flipped = host_ops.flip_lr(p=1.0)(ex, np.random.default_rng(0))
  np.testing.assert_array_equal(flipped["image"], ex["image"][:, ::-1])
  # Left brow outer (0) of the flip is the mirrored right brow outer (5) of the original.
  np.testing.assert_allclose(flipped["landmarks"][0], [64 - ex["landmarks"][5][0],
                                                       ex["landmarks"][5][1]])
  back = host_ops.flip_lr(p=1.0)(flipped, np.random.default_rng(0))
  np.testing.assert_allclose(back["landmarks"], ex["landmarks"], rtol=1e-5)
  # Image-left points stay image-left after flipping.
  assert flipped["landmarks"][0, 0] < flipped["landmarks"][5, 0]


def test_resize_and_pad_crop_move_landmarks_with_pixels():
  ex = _example()
  small = host_ops.resize(32)(ex, None)
  assert small["image"].shape == (32, 32, 3)
  np.testing.assert_allclose(small["landmarks"], ex["landmarks"] / 2)
  # A single bright pixel and a landmark on it stay together through pad_crop.
  img = np.zeros((16, 16, 3), np.uint8)
  img[5, 9] = 255
  ex = {"image": img, "landmarks": np.array([[9.5, 5.5]] * 19, np.float32)}
  for seed in range(10):
    out = host_ops.pad_crop(4)(ex, np.random.default_rng(seed))
    ys, xs = np.nonzero(out["image"][..., 0])
    if len(ys):
      np.testing.assert_allclose(out["landmarks"][0], [xs[0] + 0.5, ys[0] + 0.5])


def test_gaussian_noise_truncates_in_uint8_space():
  ex = {"image": np.full((64, 64, 3), 128, np.uint8)}
  out = host_ops.gaussian_noise(p=1.0, var=30.0)(ex, np.random.default_rng(0))["image"]
  assert out.dtype == np.uint8
  assert 5.0 < out.astype(float).std() < 6.0  # sqrt(30) = 5.48


def test_parse_is_deterministic_and_rejects_unknown_ops():
  ops = host_ops.parse("resize(32)|flip_lr|random_erasing(scale=(0.02, 0.25))")
  a = ops(_example(), np.random.default_rng(7))
  b = ops(_example(), np.random.default_rng(7))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  with pytest.raises(ValueError, match="'rotate'.*expected one of"):
    host_ops.parse("resize(32)|rotate(10)")
  with pytest.raises(ValueError, match="'resize\\(32'"):
    host_ops.parse("resize(32")


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_rand_augment_geometric_ops_move_landmarks_with_pixels(name):
  """A lone bright pixel at each landmark ends up where the transformed landmark says."""
  points = np.array([[20.5, 24.5], [40.5, 30.5], [31.5, 44.5]], np.float32)
  image = np.zeros((64, 64, 3), np.uint8)
  for x, y in points.astype(int):
    image[y - 1 : y + 2, x - 1 : x + 2] = 255  # 3x3 blobs survive nearest resampling
  out = host_ops._RANDAUG_POOL[name]({"image": image, "landmarks": points}, "image", 9,
                                    np.random.default_rng(1))
  assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
  moved = out["landmarks"]
  assert np.abs(moved - points).max() > 5  # magnitude 9 really moves them
  for x, y in moved:
    assert out["image"][int(y), int(x)].max() == 255, (name, x, y)


def test_rand_augment_and_cutout_follow_the_fixmatch_pool():
  ex = {"image": np.full((8, 8, 3), 200, np.uint8)}
  assert host_ops._RANDAUG_POOL["Solarize"](ex, "image", 9, None)["image"][0, 0, 0] == 55
  assert host_ops._RANDAUG_POOL["Posterize"](ex, "image", 9, None)["image"][0, 0, 0] == 200 & ~1
  brighter = host_ops._RANDAUG_POOL["Brightness"](ex, "image", 9, None)["image"]
  assert brighter[0, 0, 0] == int(200 * 0.86 + 0.5) or brighter[0, 0, 0] == int(200 * 0.86)
  # Two ops, then the grey box (17 x 17 for v = 16): the strong view of NCCTFER, on its own key.
  op = host_ops.parse("copy('image_strong')|rand_augment(2, key='image_strong')|"
                     "cutout(16, key='image_strong')")
  base = _example(0, 64)
  changed = 0
  for seed in range(20):
    out = op(base, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["image"], base["image"])  # the weak view is untouched
    grey = (out["image_strong"] == 127).all(-1)
    rows, cols = np.nonzero(grey)
    assert grey.sum() >= 9 * 9 and np.ptp(rows) <= 16 and np.ptp(cols) <= 16
    changed += not np.array_equal(out["image_strong"][~grey], base["image"][~grey])
    again = op(base, np.random.default_rng(seed))
    np.testing.assert_array_equal(again["image_strong"], out["image_strong"])
  assert changed >= 10  # each of 2 ops fires with p 0.5, Identity aside
