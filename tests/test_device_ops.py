"""The device augmentations (`device_ops`) against the host ops of `augment` they replace.

Each apply is compared with its host op on the same draws: the test replays the host op's numpy
draws from a copy of its generator and feeds them to the device apply as params. Each draw is
compared with the host op's draws by the statistics that a wrong draw would change.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import PIL
import pytest

from fer_jax.data import device_ops, pipeline, synthetic
from tests import host_ops


def _face(seed=0, size=32, label=3):
  image, landmarks = synthetic.draw_face(label, np.random.default_rng(seed), size)
  return {"image": image, "label": np.int32(label), "landmarks": landmarks}


def _device(ex):
  """A host example as the device apply sees it: images as float32."""
  return {k: jnp.asarray(v, jnp.float32 if device_ops._is_image(k) else None)
          for k, v in ex.items()}


# Pillow 13 resamples vertically first where the height shrinks by more than twice the width;
# device_ops keeps the earlier releases' order (the official code's), which differs by at most
# one level there. With an earlier Pillow the resizes are exact.
RESIZE_LEVELS = 1 if int(PIL.__version__.split(".")[0]) >= 13 else 0


def _assert_same(out, host, atol_landmarks=1e-5, levels=0):
  """The device example equals the host one: images exactly (or within `levels` uint8 levels,
  on a few pixels), landmarks to float32 rounding."""
  assert sorted(out) == sorted(host)
  for k, v in host.items():
    got = np.asarray(out[k])
    if k == "landmarks":
      np.testing.assert_allclose(got, v, rtol=0, atol=atol_landmarks)
    elif levels and k.startswith("image") and not k.endswith("_erase"):
      diff = np.abs(got.astype(np.int32) - np.asarray(v, np.int32))
      assert diff.max() <= levels and (diff > 0).mean() < 0.5, (k, diff.max(), (diff > 0).mean())
    else:
      assert got.shape == np.shape(v), k
      np.testing.assert_array_equal(got, np.asarray(v, got.dtype), err_msg=k)


def _draws(op, ex, n, seed=0):
  """n device draws of `op` for example `ex`, one per key."""
  keys = jax.random.split(jax.random.key(seed), n)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(op.draw, in_axes=(0, None)))(keys, ex))


# --- parsing -----------------------------------------------------------------------------------


def test_parse_reads_every_config_pipeline_like_the_host():
  from configs import baseline, eac, lanet, ncct, rul, scn

  configs = (baseline, eac, lanet, ncct, rul, scn)
  specs = [m.get_config("synthetic").input.train_ops for m in configs]
  specs.append(eac.train_ops(24, "reflip"))
  host_ex = {**_face(size=40), "index": np.int32(0)}
  dev_ex = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in host_ex.items()}
  for spec in specs:
    host = host_ops.parse(spec)(host_ex, np.random.default_rng(0))
    dev = jax.eval_shape(device_ops.parse(spec).example, dev_ex, jax.random.key(0))
    assert sorted(dev) == sorted(host), spec
    for k, v in host.items():
      assert dev[k].shape == np.shape(v), (spec, k)
      want = np.float32 if device_ops._is_image(k) else np.asarray(v).dtype
      assert dev[k].dtype == want, (spec, k)
  assert device_ops.parse(specs[2]).output_size(40, 50) == (72, 72)
  assert device_ops.parse("flip_lr|pad_crop(4)").output_size(40, 50) == (40, 50)


def test_parse_rejects_unknown_ops_and_malformed_arguments():
  with pytest.raises(ValueError, match=r"'blur'.*'flip_lr\|blur'.*'copy', 'cutout'"):
    device_ops.parse("flip_lr|blur")
  for spec, part in [("resize(224|flip_lr", "resize(224"), ("flip_lr(p=x)", "flip_lr(p=x)"),
                     ("resize(224, foo=1)", "resize(224, foo=1)"), ("resize()", "resize()"),
                     ("resize(8, resample='nearest')", "resample='nearest'"),
                     ("flip_lr.x", "flip_lr.x")]:
    with pytest.raises(ValueError, match="pipeline op") as info:
      device_ops.parse(spec)
    assert part in str(info.value) and repr(spec) in str(info.value), spec
  with pytest.raises(ValueError, match="soft_label"):
    device_ops.parse("sample_label")(
      {"image": jnp.zeros((2, 8, 8, 3), jnp.uint8), "label": jnp.zeros(2, jnp.int32)},
      jax.random.key(0))


# --- resampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_resize_equals_pil(resample):
  """Exact: PIL's coefficients, its 22-bit fixed point, its rounding and its pass order."""
  for src, size, seed in [((40, 40), 24, 0), ((24, 24), 40, 1), ((37, 29), 17, 2),
                          ((29, 37), 33, 3), ((30, 36), 30, 4), ((24, 24), 24, 5)]:
    ex = _face(seed, size=max(src))
    ex["image"] = np.asarray(ex["image"][: src[0], : src[1]])
    host = host_ops.resize(size, resample=resample)(ex, None)
    apply = jax.jit(device_ops.resize(size, resample=resample).apply)
    _assert_same(apply(_device(ex), ()), host, atol_landmarks=0)


def _host_crop_box(rng, h, w, scale, ratio):
  """host_ops.random_resized_crop's draws, replayed from a copy of its generator."""
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  return None


@pytest.mark.parametrize("truncate", [False, True])
def test_random_resized_crop_equals_host_on_the_same_draws(truncate):
  kw = {"scale": (0.08, 1.0), "truncate_landmarks": truncate}
  host_op = host_ops.random_resized_crop(24, **kw)
  op = device_ops.random_resized_crop(24, **kw)
  apply = jax.jit(op.apply)
  for seed in range(12):
    ex = _face(seed, size=36)
    box = _host_crop_box(np.random.default_rng(seed), 36, 36, kw["scale"], (3 / 4, 4 / 3))
    host = host_op(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.array(box, jnp.int32)), host, levels=RESIZE_LEVELS)
  # When no try fits, the centre crop at the nearest allowed aspect: (0, 7, 36, 22) here.
  ex = _face(size=36)
  host = host_ops.random_resized_crop(24, scale=(0.9, 1.0), ratio=(0.5, 0.6))(
    ex, np.random.default_rng(0))
  op = device_ops.random_resized_crop(24, scale=(0.9, 1.0), ratio=(0.5, 0.6))
  box = _draws(op, _device(ex), 4)
  np.testing.assert_array_equal(box, [[0, 7, 36, 22]] * 4)
  _assert_same(jax.jit(op.apply)(_device(ex), jnp.asarray(box[0])), host, levels=RESIZE_LEVELS)


def _host_boxes(op, h, w, size, n):
  """(top, left, height, width) of n host crops, read back from two landmarks at (0, 0) and
  (1, 1), which the op moves by -(left, top) and scales by size / (width, height)."""
  ex = {"image": np.zeros((h, w, 3), np.uint8), "landmarks": np.array([[0, 0], [1, 1]], np.float32)}
  rng = np.random.default_rng(1)
  points = np.array([op(ex, rng)["landmarks"] for _ in range(n)], np.float64)
  width, height = (size / (points[:, 1] - points[:, 0])).T
  left, top = -points[:, 0, 0] * width / size, -points[:, 0, 1] * height / size
  return np.round(np.stack([top, left, height, width], axis=1)).astype(int)


def _box_stats(boxes, h, w):
  top, left, bh, bw = boxes.T.astype(float)
  return {"area": bh * bw / (h * w), "log_aspect": np.log(bw / bh),
          "top": (top + 0.5) / (h - bh + 1), "left": (left + 0.5) / (w - bw + 1)}


def test_random_resized_crop_draws_like_the_host():
  n = 3000
  for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.6, 1.0), (0.5, 0.8))]:
    host = _host_boxes(host_ops.random_resized_crop(8, scale=scale, ratio=ratio), 32, 32, 8, n)
    op = device_ops.random_resized_crop(8, scale=scale, ratio=ratio)
    dev = _draws(op, {"image": jnp.zeros((32, 32, 3))}, n)
    assert (dev[:, :2] >= 0).all() and (dev[:, :2] + dev[:, 2:] <= 32).all()
    # The centre crop (nearest allowed aspect) when none of the 10 tries fits: ~14% in the
    # second setting; one try alone would fall back ~82% of the time.
    fallback = (0, 3, 32, 26) if ratio[1] == 0.8 else (0, 0, 32, 32)
    rates = [np.mean((b == fallback).all(axis=1)) for b in (host, dev)]
    assert abs(rates[0] - rates[1]) < 0.04, (scale, rates)
    hs, ds = _box_stats(host, 32, 32), _box_stats(dev, 32, 32)
    for k in hs:
      assert abs(hs[k].mean() - ds[k].mean()) < 0.03, (scale, k, hs[k].mean(), ds[k].mean())
      assert abs(hs[k].std() - ds[k].std()) < 0.03, (scale, k, hs[k].std(), ds[k].std())
    assert np.isclose(ds["area"].min(), hs["area"].min(), atol=0.02)
    assert np.isclose(ds["area"].max(), hs["area"].max(), atol=0.02)


# --- flips, crops, noise, erasing, labels, cutout ----------------------------------------------


@pytest.mark.parametrize("swap", [True, False])
def test_flip_equals_host(swap):
  ex = _face(1)
  apply = jax.jit(device_ops.flip_lr(swap_landmarks=swap).apply)
  host = host_ops.flip_lr(p=1.0, swap_landmarks=swap)(ex, np.random.default_rng(0))
  _assert_same(apply(_device(ex), jnp.bool_(True)), host, atol_landmarks=0)
  _assert_same(apply(_device(ex), jnp.bool_(False)), ex, atol_landmarks=0)
  if swap:  # image-left points stay image-left
    assert host["landmarks"][0, 0] < host["landmarks"][5, 0]
  flips = _draws(device_ops.flip_lr(p=0.3), _device(ex), 4000)
  assert abs(flips.mean() - 0.3) < 0.03
  assert _draws(device_ops.flip_lr(p=1.0), _device(ex), 100).all()


def test_pad_crop_equals_host_at_every_offset():
  ex = _face(2, size=24)
  op = device_ops.pad_crop(4)
  apply = jax.jit(op.apply)
  seen = set()
  for seed in range(60):
    offset = np.random.default_rng(seed).integers(0, 9, 2)
    seen.add(tuple(offset))
    host = host_ops.pad_crop(4)(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.asarray(offset, jnp.int32)), host, atol_landmarks=0)
  assert len(seen) > 40
  offsets = _draws(op, _device(ex), 9000)
  counts = np.bincount(offsets.ravel(), minlength=9) / offsets.size
  np.testing.assert_allclose(counts, 1 / 9, atol=0.015)  # uniform over 0..2 pad


def test_noise_ops_equal_host_on_the_same_draws():
  ex = _face(3, size=24)
  noise_op = device_ops.gaussian_noise(p=0.5, var=30.0)
  basic_op = device_ops.basic_aug(p=0.5)
  noise_apply, basic_apply = jax.jit(noise_op.apply), jax.jit(basic_op.apply)
  kinds = set()
  for seed in range(16):
    rng = np.random.default_rng(seed)
    fire = rng.random() < 0.5
    noise = rng.normal(0.0, math.sqrt(30.0), ex["image"].shape) if fire else np.zeros((24, 24, 3))
    params = {"fire": jnp.bool_(fire), "noise": jnp.asarray(noise, jnp.float32)}
    host = host_ops.gaussian_noise(p=0.5, var=30.0)(ex, np.random.default_rng(seed))
    _assert_same(noise_apply(_device(ex), params), host)

    rng = np.random.default_rng(seed)
    fire = rng.random() < 0.5
    flip = bool(fire and rng.random() < 0.5)
    if fire and not flip:
      rng.random()  # gaussian_noise(p=1)'s own fire draw
      noise = rng.normal(0.0, math.sqrt(30.0), ex["image"].shape)
    kinds.add((fire, flip))
    params = {"fire": jnp.bool_(fire), "flip": jnp.bool_(flip),
              "noise": jnp.asarray(noise, jnp.float32)}
    host = host_ops.basic_aug(p=0.5)(ex, np.random.default_rng(seed))
    _assert_same(basic_apply(_device(ex), params), host)
  assert len(kinds) == 3  # none, flip and noise were all compared


def test_noise_ops_draw_like_the_host():
  ex = {"image": np.full((16, 16, 3), 128, np.uint8)}
  n = 2000
  host_noise = host_ops.gaussian_noise(p=0.3, var=30.0)
  host_basic = host_ops.basic_aug(p=0.6)
  rng = np.random.default_rng(0)
  host = {"noise": np.array([host_noise(ex, rng)["image"] for _ in range(n)], float),
          "basic": np.array([host_basic(ex, rng)["image"] for _ in range(n)], float)}
  keys = jax.random.split(jax.random.key(0), n)
  dev = {}
  for name, op in [("noise", device_ops.gaussian_noise(p=0.3, var=30.0)),
                   ("basic", device_ops.basic_aug(p=0.6))]:
    run = jax.jit(jax.vmap(lambda k, op=op: op.apply(_device(ex), op.draw(k, _device(ex)))))
    dev[name] = np.asarray(run(keys)["image"])
  for name, fire in [("noise", 0.3), ("basic", 0.3)]:  # basic: noise half of p = 0.6
    changed = {k: (v[name] != 128).any(axis=(1, 2, 3)) for k, v in [("h", host), ("d", dev)]}
    assert abs(changed["h"].mean() - fire) < 0.05 and abs(changed["d"].mean() - fire) < 0.05
    values = {k: v[name][changed[k]] for k, v in [("h", host), ("d", dev)]}
    # N(0, 30) truncated to uint8: std ~5.5, mean ~127.5.
    for stat in (np.std, np.mean):
      assert abs(stat(values["h"]) - stat(values["d"])) < 0.1, stat
    assert abs(np.std(values["d"]) - math.sqrt(30)) < 0.3
    assert abs(np.mean(values["d"]) - 127.5) < 0.1


def test_random_erasing_draws_like_the_host():
  n = 3000
  for (h, w), kw in [((24, 20), {"scale": (0.02, 0.25), "p": 0.5}),
                     ((16, 16), {"scale": (0.7, 0.95), "p": 1.0})]:
    ex = {"image": np.zeros((h, w, 3), np.uint8)}
    host_op = host_ops.random_erasing(**kw)
    rng = np.random.default_rng(0)
    host = np.array([host_op(ex, rng)["image_erase"] for _ in range(n)])
    op = device_ops.random_erasing(**kw)
    dev = _draws(op, _device(ex), n)
    assert dev.dtype == np.int32 and dev.shape == (n, 4)
    assert (dev[:, 0] + dev[:, 2] <= h).all() and (dev[:, 1] + dev[:, 3] <= w).all()
    assert ((dev[:, 2] < h) & (dev[:, 3] < w)).all()
    assert (dev[dev[:, 2] == 0] == 0).all()  # no box is (0, 0, 0, 0)
    # Fire rate: p times the chance that one of the 10 tries fits (~70% in the second).
    rates = [(b[:, 2] > 0).mean() for b in (host, dev)]
    assert abs(rates[0] - rates[1]) < 0.04, (kw, rates)
    hs, ds = (_box_stats(b[b[:, 2] > 0], h, w) for b in (host, dev))
    for k in hs:
      assert abs(hs[k].mean() - ds[k].mean()) < 0.04, (kw, k, hs[k].mean(), ds[k].mean())
      assert abs(hs[k].std() - ds[k].std()) < 0.04, (kw, k, hs[k].std(), ds[k].std())
    for k in ("area", "log_aspect"):
      assert abs(hs[k].min() - ds[k].min()) < 0.1 and abs(hs[k].max() - ds[k].max()) < 0.1
  box = jnp.array([1, 2, 3, 4], jnp.int32)
  assert (np.asarray(op.apply({"image": jnp.zeros((8, 8, 3))}, box)["image_erase"]) == box).all()


def test_sample_label_equals_host_on_the_same_draws():
  op = device_ops.sample_label()
  apply = jax.jit(op.apply)
  probs = np.array([0.1, 0.0, 0.25, 0.05, 0.6], np.float32) * 3  # unnormalised, one zero
  ex = {"image": np.zeros((4, 4, 3), np.uint8), "label": np.int32(0), "soft_label": probs}
  labels = []
  for seed in range(200):
    host = host_ops.sample_label()(ex, np.random.default_rng(seed))
    out = apply(_device(ex), jnp.float32(np.random.default_rng(seed).random()))
    _assert_same(out, host)
    labels.append(int(out["label"]))
  assert 1 not in labels
  draws = np.asarray(jax.vmap(lambda u: op.apply(_device(ex), u)["label"])(
    _draws(op, _device(ex), 6000)))
  np.testing.assert_allclose(np.bincount(draws, minlength=5) / 6000, probs / probs.sum(),
                             atol=0.025)


def test_cutout_equals_host_on_the_same_draws():
  ex = _face(4, size=24)
  op = device_ops.cutout(10, fill=127)
  apply = jax.jit(op.apply)
  for seed in range(20):
    rng = np.random.default_rng(seed)
    left = int(max(0.0, 24 * rng.random() - 5))
    top = int(max(0.0, 24 * rng.random() - 5))
    host = host_ops.cutout(10, fill=127)(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.array([top, left], jnp.int32)), host, atol_landmarks=0)
  corners = _draws(op, _device(ex), 4000)
  # top = floor(max(0, U(0, 24) - 5)): 0 with probability 6/24, else uniform on 1..18.
  for c in corners.T:
    assert abs((c == 0).mean() - 6 / 24) < 0.03 and c.max() == 18
    assert abs(c.mean() - sum(range(1, 19)) / 24) < 0.3


# --- color jitter and RandAugment --------------------------------------------------------------


@pytest.mark.parametrize("strength", [(0.4, 0.4, 0.4), (0.0, 0.8, 1.5)])
def test_color_jitter_equals_host_on_the_same_draws(strength):
  host_op = host_ops.color_jitter(*strength)
  op = device_ops.color_jitter(*strength)
  apply = jax.jit(op.apply)
  enabled = [x for x in strength if x > 0]
  for seed in range(10):
    ex = _face(seed, size=24, label=seed % 7)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(enabled))
    factor = np.zeros(len(enabled))
    for i in order:
      factor[i] = rng.uniform(max(0.0, 1 - enabled[i]), 1 + enabled[i])
    host = host_op(ex, np.random.default_rng(seed))
    params = {"order": jnp.asarray(order, jnp.int32), "factor": jnp.asarray(factor, jnp.float32)}
    _assert_same(apply(_device(ex), params), host)


def test_color_jitter_draws_like_the_host():
  # Brightness alone on a flat 100 image reads the factor back as out / 100; x = 1.5 draws from
  # U(0, 2.5), clamped at 0 as torchvision does.
  ex = {"image": np.full((4, 4, 3), 100, np.uint8)}
  n = 3000
  rng = np.random.default_rng(0)
  host_op = host_ops.color_jitter(brightness=1.5)
  host = np.array([host_op(ex, rng)["image"][0, 0, 0] for _ in range(n)], float)
  op = device_ops.color_jitter(brightness=1.5)
  run = jax.jit(jax.vmap(lambda k: op.apply(_device(ex), op.draw(k, _device(ex)))["image"]))
  dev = np.asarray(run(jax.random.split(jax.random.key(0), n)))[:, 0, 0, 0]
  for values in (host, dev):
    assert values.min() < 3 and values.max() > 245
    assert abs(values.mean() - 124.5) < 5  # mean of trunc(100 U(0, 2.5))
    assert abs((values < 50).mean() - 0.2) < 0.03
  # All 6 orders of the three enhancers, equally often.
  orders = _draws(device_ops.color_jitter(0.4, 0.4, 0.4), _device(ex), 6000)["order"]
  codes = orders @ np.array([9, 3, 1])
  counts = np.unique(codes, return_counts=True)[1]
  assert len(counts) == 6 and (np.abs(counts / 6000 - 1 / 6) < 0.025).all()


class _SignRng:
  """Stands in for the generator inside a pool op: `_signed` negates when random() < 0.5."""

  def __init__(self, negate):
    self.negate = negate

  def random(self):
    return 0.25 if self.negate else 0.75


def _pool_inputs():
  faces = [_face(seed, size=28, label=seed) for seed in range(2)]
  rng = np.random.default_rng(0)
  points = rng.uniform(0, 28, (19, 2)).astype(np.float32)
  return faces + [
    # Noise, non-square: every grey level, rotations off-centre.
    {"image": rng.integers(0, 256, (26, 31, 3), dtype=np.uint8), "landmarks": points},
    # Levels 0..25: PIL's float64 autocontrast maps 25 to 254, not 255.
    {"image": rng.integers(0, 26, (28, 28, 3), dtype=np.uint8), "landmarks": points},
    # Few levels: equalize's LUT goes past 255 and clips.
    {"image": (rng.integers(0, 3, (28, 28, 3)) * 90).astype(np.uint8), "landmarks": points},
  ]


def test_rand_augment_pool_equals_host():
  """Every pool op at every magnitude and sign, exactly (landmarks to float32 rounding)."""
  assert device_ops.POOL == tuple(host_ops._RANDAUG_POOL)
  signed = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
  cases = [(name, v, negate) for name in device_ops.POOL for v in range(1, 10)
           for negate in ((False, True) if name in signed else (False,))]
  op, v, negate = (np.array(c) for c in zip(*cases))
  op = np.array([device_ops.POOL.index(name) for name in op])
  pool_op = jax.jit(jax.vmap(device_ops.pool_op, in_axes=(None, None, 0, 0, 0)))
  inputs = _pool_inputs()
  autocontrast = host_ops._RANDAUG_POOL["AutoContrast"](inputs[3], "image", 1, None)["image"]
  assert autocontrast.max() == 254  # the float64 quirk is exercised
  for ex in inputs:
    images, points = jax.device_get(pool_op(jnp.asarray(ex["image"], jnp.float32),
                                            jnp.asarray(ex["landmarks"]), op, v, negate))
    for i, (name, magnitude, neg) in enumerate(cases):
      host = host_ops._RANDAUG_POOL[name](ex, "image", magnitude, _SignRng(neg))
      _assert_same({"image": images[i], "landmarks": points[i]},
                   {k: host[k] for k in ("image", "landmarks")}, atol_landmarks=2e-5)


def _host_rand_augment_params(rng, n, p):
  """host_ops.rand_augment's draws, replayed from a copy of its generator."""
  params = {"op": rng.integers(0, len(device_ops.POOL), n), "magnitude": np.zeros(n, int),
            "fire": np.zeros(n, bool), "negate": np.zeros(n, bool)}
  for i in range(n):
    params["magnitude"][i] = rng.integers(1, 10)
    params["fire"][i] = rng.random() < p
    if params["fire"][i] and params["op"][i] >= device_ops.POOL.index("Rotate"):
      params["negate"][i] = rng.random() < 0.5
  return {k: jnp.asarray(v) for k, v in params.items()}


def test_rand_augment_equals_host_on_the_same_draws():
  op = device_ops.rand_augment(3, p=0.7, key="image_strong")
  apply = jax.jit(op.apply)
  host_op = host_ops.rand_augment(3, p=0.7, key="image_strong")
  for seed in range(12):
    ex = _face(seed, size=24, label=seed % 7)
    ex["image_strong"] = ex["image"]
    params = _host_rand_augment_params(np.random.default_rng(seed), 3, 0.7)
    host = host_op(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), params), host)


def test_rand_augment_draws_like_the_host(monkeypatch):
  calls = []
  for name in device_ops.POOL:
    monkeypatch.setitem(host_ops._RANDAUG_POOL, name,
                        lambda ex, k, v, rng, name=name: calls.append((name, v)) or ex)
  host_op = host_ops.rand_augment(2, p=0.6)
  rng = np.random.default_rng(0)
  n = 3000
  ex = {"image": np.zeros((8, 8, 3), np.uint8)}
  for _ in range(n):
    host_op(ex, rng)
  host_choices = np.array([device_ops.POOL.index(name) for name, _ in calls])
  host_magnitudes = np.array([v for _, v in calls])
  dev = _draws(device_ops.rand_augment(2, p=0.6), _device(ex), n)
  fired = dev["fire"].ravel()
  for ops, magnitudes, rate in [(host_choices, host_magnitudes, len(calls) / (2 * n)),
                                (dev["op"].ravel()[fired], dev["magnitude"].ravel()[fired],
                                 fired.mean())]:
    assert abs(rate - 0.6) < 0.02
    np.testing.assert_allclose(np.bincount(ops, minlength=14) / len(ops), 1 / 14, atol=0.015)
    np.testing.assert_allclose(np.bincount(magnitudes, minlength=10)[1:] / len(ops), 1 / 9,
                               atol=0.02)
    assert magnitudes.min() == 1 and magnitudes.max() == 9
  assert abs(dev["negate"].mean() - 0.5) < 0.02


# --- the batched pipeline ----------------------------------------------------------------------


def test_pipeline_without_randomness_equals_host_end_to_end():
  """Ops that draw nothing (or never fire) compose like the host pipeline, keys and all, and
  to_model_input gives the same model input from either."""
  spec = ("resize(30, resample='bicubic')|flip_lr(p=1.0, swap_landmarks=False)|copy('image_b')|"
          "pad_crop(0)|resize(20, key='image_b')|color_jitter|random_erasing(p=0.0, key='image_b')|"
          "flip_lr(p=0.0)|random_resized_crop(16, scale=(0.9, 1.0), ratio=(0.5, 0.6), "
          "key='image_b')")
  examples = [{**_face(seed, size=36), "index": np.int32(seed)} for seed in range(2)]
  host = [host_ops.parse(spec)(ex, np.random.default_rng(0)) for ex in examples]
  batch = {k: jnp.asarray(np.stack([ex[k] for ex in examples])) for k in examples[0]}
  out = jax.jit(device_ops.parse(spec))(batch, jax.random.key(0))
  for i, h in enumerate(host):
    _assert_same({k: v[i] for k, v in out.items()}, h, levels=RESIZE_LEVELS)
  host_batch = {k: jnp.asarray(np.stack([h[k] for h in host])) for k in host[0]}
  for k, v in pipeline.to_model_input(out).items():  # one level is 1/255/std ~ 0.018
    np.testing.assert_allclose(v, pipeline.to_model_input(host_batch)[k], rtol=0,
                               atol=1e-6 + RESIZE_LEVELS * 0.018)


def test_pipeline_rows_draw_from_fold_in_of_their_index():
  spec = ("resize(20)|copy('image_strong')|pad_crop(4)|flip_lr|cutout(6, key='image_strong')|"
          "random_erasing(scale=(0.02, 0.25))")
  pipe = device_ops.parse(spec)
  examples = [{**_face(seed, size=28), "index": np.int32(seed)} for seed in range(4)]
  batch = {k: jnp.asarray(np.stack([ex[k] for ex in examples])) for k in examples[0]}
  key = jax.random.key(7)
  run = jax.jit(pipe)
  out = run(batch, key)
  assert out["image"].dtype == jnp.float32 and out["image"].shape == (4, 20, 20, 3)
  images = np.asarray(out["image_strong"])
  assert (images == np.round(images)).all() and images.min() >= 0 and images.max() <= 255
  # A row's draws do not depend on the batch size, and row i uses fold_in(key, i).
  head = run({k: v[:2] for k, v in batch.items()}, key)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[:2], b), out, head)
  row = jax.jit(pipe.example)({k: v[3] for k, v in batch.items()}, jax.random.fold_in(key, 3))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[3], b), out, row)
  # Rows differ from each other (independent draws), and so do two keys.
  assert not np.array_equal(images[0], images[1])
  other = run(batch, jax.random.key(8))
  assert not np.array_equal(np.asarray(other["image_strong"]), images)
