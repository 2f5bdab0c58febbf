"""The device augmentations (`device_ops`) against the PIL reference ops they replace.

Each apply is compared with its reference op (tests/host_ops.py, run under the Pillow the official
code ran with: tests/pillow_reference.py) on the same draws: the test replays the reference's
numpy draws from a copy of its generator and feeds them to the device apply as params, and the
results must be equal. Each draw is compared by a chi-square or KS test with the exact
distribution that torchvision's or FixMatch's code implies (tests/torchvision_draws.py).
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.data import device_ops, pipeline, synthetic
from tests import host_ops, pillow_reference
from tests import torchvision_draws as draws

P_MIN = draws.P_MIN


@pytest.fixture(scope="module")
def reference():
  """host_ops under the Pillow the official code ran with (tests/pillow_reference.py)."""
  ref = pillow_reference.start()
  yield ref
  ref.close()


def _face(seed=0, size=32, label=3):
  image, landmarks = synthetic.draw_face(label, np.random.default_rng(seed), size)
  return {"image": image, "label": np.int32(label), "landmarks": landmarks}


def _device(ex):
  """A host example as the device apply sees it: images as float32."""
  return {k: jnp.asarray(v, jnp.float32 if device_ops._is_image(k) else None)
          for k, v in ex.items()}


def _assert_same(out, host, atol_landmarks=1e-5):
  """The device example equals the host one: images exactly, landmarks to float32 rounding."""
  assert sorted(out) == sorted(host)
  for k, v in host.items():
    got = np.asarray(out[k])
    if k == "landmarks":
      np.testing.assert_allclose(got, v, rtol=0, atol=atol_landmarks)
    else:
      assert got.shape == np.shape(v), k
      np.testing.assert_array_equal(got, np.asarray(v, got.dtype), err_msg=k)


def _draws(op, ex, n, seed=0):
  """n device draws of `op` for example `ex`, one per key."""
  keys = jax.random.split(jax.random.key(seed), n)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(op.draw, in_axes=(0, None)))(keys, ex))


# --- parsing -----------------------------------------------------------------------------------


def test_parse_reads_every_config_pipeline_like_the_host():
  from configs import baseline, eac, lanet, ncct, nla, resup, rul, scn

  configs = (baseline, eac, lanet, ncct, nla, resup, rul, scn)
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

# (height, width) -> size: up- and downscales, both aspects, an unchanged axis, and boxes that
# Pillow 13 resizes vertically first (25x21 and 36x28 -> 24; shrinking the height by 3 or more).
RESIZES = [((40, 40), 24), ((24, 24), 40), ((37, 29), 17), ((29, 37), 33), ((30, 36), 30),
           ((24, 24), 24), ((25, 21), 24), ((36, 28), 24), ((40, 12), 12), ((7, 40), 24)]


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_resize_equals_pil(resample, reference):
  """Exact: PIL's coefficients, its 22-bit fixed point, its rounding and its pass order."""
  for seed, (src, size) in enumerate(RESIZES):
    ex = _face(seed, size=max(src))
    ex["image"] = np.ascontiguousarray(ex["image"][: src[0], : src[1]])
    host = reference.op("resize", size, resample=resample)(ex, None)
    apply = jax.jit(device_ops.resize(size, resample=resample).apply)
    _assert_same(apply(_device(ex), ()), host, atol_landmarks=0)


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_traced_crop_boxes_resample_as_pil(resample, reference):
  """The random crop's traced box, over crops of every kind of an image, to a smaller and to
  the same size (LA-Net's 224 -> 224): exactly PIL's crop and resize."""
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
  sides = (1, 2, 5, 11, 17, 21, 24, 25, 28, 31, 36)
  boxes = [(int(rng.integers(0, 37 - ch)), int(rng.integers(0, 37 - cw)), ch, cw)
           for ch, cw in itertools.product(sides, sides[::2])]
  for size in (24, 36):
    op = device_ops.random_resized_crop(size, resample=resample)
    apply = jax.jit(jax.vmap(op.apply, in_axes=(None, 0)))
    out = np.asarray(apply({"image": jnp.asarray(img, jnp.float32)},
                           jnp.asarray(boxes, jnp.int32))["image"])
    resize = reference.op("resize", size, resample=resample)
    for got, (top, left, ch, cw) in zip(out, boxes):
      want = resize({"image": np.ascontiguousarray(img[top : top + ch, left : left + cw])}, None)
      np.testing.assert_array_equal(got, want["image"], err_msg=str((size, top, left, ch, cw)))


def test_lanet_resizes_bicubic_and_the_other_methods_bilinear(reference):
  """LA-Net's loader resizes every image with PIL's default (bicubic since Pillow 7), and its
  RandomResizedCrop resizes the crop the same way; the other methods' official transforms
  resize with torchvision's bilinear."""
  from configs import baseline, eac, lanet, ncct, rul, scn

  ex = _face(5, size=40)
  key = jax.random.key(0)
  crops = {}
  for module in (baseline, eac, lanet, ncct, rul, scn):
    c = module.get_config("synthetic")
    size, resample = c.input.image_size, ("bicubic" if module is lanet else "bilinear")
    host = reference.op("resize", size, resample=resample)(ex, None)
    _assert_same(jax.jit(device_ops.parse(c.input.eval_ops).example)(_device(ex), key), host)
    for op in device_ops.parse(c.input.train_ops).ops:
      if op.name == "random_resized_crop":
        crops[module] = op
  assert list(crops) == [lanet]
  (top, left, ch, cw) = (3, 1, 30, 37)
  out = jax.jit(crops[lanet].apply)(_device(ex), jnp.array([top, left, ch, cw], jnp.int32))
  crop = np.ascontiguousarray(ex["image"][top : top + ch, left : left + cw])
  host = reference.op("resize", size, resample="bicubic")({"image": crop}, None)
  np.testing.assert_array_equal(out["image"], host["image"])


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


@pytest.mark.parametrize("truncate, resample", [(False, "bilinear"), (True, "bicubic")])
def test_random_resized_crop_equals_pil_on_the_same_draws(truncate, resample, reference):
  kw = {"scale": (0.08, 1.0), "truncate_landmarks": truncate, "resample": resample}
  host_op = reference.op("random_resized_crop", 24, **kw)
  apply = jax.jit(device_ops.random_resized_crop(24, **kw).apply)
  for seed in range(12):
    ex = _face(seed, size=36)
    box = _host_crop_box(np.random.default_rng(seed), 36, 36, kw["scale"], (3 / 4, 4 / 3))
    host = host_op(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.array(box, jnp.int32)), host)
  # When no try fits, the centre crop at the nearest allowed aspect: (0, 7, 36, 22) here.
  ex = _face(size=36)
  kw = {"scale": (0.9, 1.0), "ratio": (0.5, 0.6), "resample": resample}
  host = reference.op("random_resized_crop", 24, **kw)(ex, np.random.default_rng(0))
  op = device_ops.random_resized_crop(24, **kw)
  box = _draws(op, _device(ex), 4)
  np.testing.assert_array_equal(box, [[0, 7, 36, 22]] * 4)
  _assert_same(jax.jit(op.apply)(_device(ex), jnp.asarray(box[0])), host)


@pytest.mark.parametrize("h, w, scale, ratio", [
  (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),  # torchvision's defaults
  (32, 32, (0.75, 1.0), (3 / 4, 4 / 3)),  # LA-Net's
  (32, 32, (0.6, 1.0), (0.5, 0.8)),  # the centre crop (32, 26) ~14% of the time
])
def test_random_resized_crop_draws_follow_torchvision(h, w, scale, ratio):
  """The crop's size against get_params' exact distribution (10 tries, first fit, fallback),
  and its offset, uniform over the positions where it fits."""
  n = 60000
  op = device_ops.random_resized_crop(8, scale=scale, ratio=ratio)
  top, left, ch, cw = _draws(op, {"image": jnp.zeros((h, w, 3))}, n).T
  fh, fw = draws.centre_crop(h, w, ratio)
  probs = draws.crop_sizes(h, w, scale, ratio)
  assert min(draws.box_sizes(np.stack([ch, cw], -1), probs, (fh, fw))) > P_MIN
  free = (ch != fh) | (cw != fw)  # the fallback's offset is the centre
  assert draws.uniform_offsets(top[free], h - ch[free] + 1) > P_MIN
  assert draws.uniform_offsets(left[free], w - cw[free] + 1, seed=1) > P_MIN


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


def test_flip_draws_follow_torchvision():
  n = 40000
  for p in (0.5, 0.3):
    flips = _draws(device_ops.flip_lr(p=p), {"image": jnp.zeros((4, 4, 3))}, n)
    assert draws.binomial(flips.sum(), n, p) > P_MIN, p
  assert _draws(device_ops.flip_lr(p=1.0), {"image": jnp.zeros((4, 4, 3))}, 100).all()


def test_pad_crop_equals_host_at_every_offset():
  ex = _face(2, size=24)
  apply = jax.jit(device_ops.pad_crop(4).apply)
  seen = set()
  for seed in range(60):
    offset = np.random.default_rng(seed).integers(0, 9, 2)
    seen.add(tuple(offset))
    host = host_ops.pad_crop(4)(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.asarray(offset, jnp.int32)), host, atol_landmarks=0)
  assert len(seen) > 40


def test_pad_crop_draws_follow_torchvision():
  """RandomCrop(padding=4).get_params: top and left independent and uniform on 0..8."""
  offsets = _draws(device_ops.pad_crop(4), {"image": jnp.zeros((24, 24, 3))}, 40000)
  assert draws.categorical(offsets, np.full((9, 9), 1 / 81)) > P_MIN


def test_pad_crop_fires_with_probability_p():
  """RandomApply([RandomCrop(padding=4)], p=0.2): the image itself (offset (4, 4)) with
  probability 0.8, else an offset uniform on 0..8 x 0..8; the host reference does the same."""
  expected = np.full((9, 9), 0.2 / 81)
  expected[4, 4] += 0.8
  offsets = _draws(device_ops.pad_crop(4, p=0.2), {"image": jnp.zeros((24, 24, 3))}, 40000)
  assert draws.categorical(offsets, expected) > P_MIN
  ex = _face(2, size=24)
  unchanged = [host_ops.pad_crop(4, p=0.2)(ex, np.random.default_rng(seed))["image"] is ex["image"]
               for seed in range(4000)]
  assert draws.binomial(sum(unchanged), len(unchanged), 0.8) > P_MIN


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


def test_noise_ops_draws_follow_the_official_code():
  """EAC's add_g and SCN's basic_aug: the fire coin, basic_aug's flip-or-noise coin, and the
  pixel noise N(0, var)."""
  n = 40000
  ex = {"image": jnp.zeros((2, 2, 3))}
  noise = _draws(device_ops.gaussian_noise(p=0.3, var=30.0), ex, n)
  basic = _draws(device_ops.basic_aug(p=0.6, var=20.0), ex, n)
  assert draws.binomial(noise["fire"].sum(), n, 0.3) > P_MIN
  assert draws.binomial(basic["fire"].sum(), n, 0.6) > P_MIN
  assert draws.binomial(basic["flip"][basic["fire"]].sum(), basic["fire"].sum(), 0.5) > P_MIN
  assert draws.ks(noise["noise"], "norm", 0.0, math.sqrt(30.0)) > P_MIN
  assert draws.ks(basic["noise"], "norm", 0.0, math.sqrt(20.0)) > P_MIN


@pytest.mark.parametrize("h, w, kw", [(24, 20, {"scale": (0.02, 0.25), "p": 0.5}),
                                      (16, 16, {"scale": (0.7, 0.95), "p": 1.0}),
                                      (20, 24, {"scale": (0.02, 0.2), "p": 0.2})])
def test_random_erasing_draws_follow_torchvision(h, w, kw):
  """The p coin and get_params' size (10 tries, the first with height < h and width < w; none:
  no box) against their exact distribution, and the offset, uniform where the box fits."""
  n = 60000
  top, left, eh, ew = _draws(device_ops.random_erasing(**kw), {"image": jnp.zeros((h, w, 3))},
                             n).T
  probs = draws.erasing_sizes(h, w, kw["scale"], (0.3, 3.3), kw["p"])
  assert min(draws.box_sizes(np.stack([eh, ew], -1), probs, (0, 0))) > P_MIN
  fired = eh > 0
  assert (top[~fired] == 0).all() and (left[~fired] == 0).all() and (ew[~fired] == 0).all()
  assert draws.uniform_offsets(top[fired], h - eh[fired] + 1) > P_MIN
  assert draws.uniform_offsets(left[fired], w - ew[fired] + 1, seed=1) > P_MIN
  box = jnp.array([1, 2, 3, 4], jnp.int32)
  op = device_ops.random_erasing(**kw)
  assert (np.asarray(op.apply({"image": jnp.zeros((8, 8, 3))}, box)["image_erase"]) == box).all()


def test_sample_label_equals_host_on_the_same_draws():
  op = device_ops.sample_label()
  apply = jax.jit(op.apply)
  probs = np.array([0.1, 0.0, 0.25, 0.05, 0.6], np.float32) * 3  # unnormalised, one zero
  ex = {"image": np.zeros((4, 4, 3), np.uint8), "label": np.int32(0), "soft_label": probs}
  for seed in range(200):
    host = host_ops.sample_label()(ex, np.random.default_rng(seed))
    out = apply(_device(ex), jnp.float32(np.random.default_rng(seed).random()))
    _assert_same(out, host)
  labels = np.asarray(jax.vmap(lambda u: op.apply(_device(ex), u)["label"])(
    _draws(op, _device(ex), 40000)))
  assert draws.categorical(labels, probs / probs.sum()) > P_MIN


def test_cutout_equals_pil_on_the_same_draws(reference):
  """ImageDraw.rectangle includes both corners: 17 x 17 pixels for size 16, clipped at the
  image's edges."""
  ex = _face(4, size=24)
  apply = jax.jit(device_ops.cutout(16, fill=127).apply)
  host_op = reference.op("cutout", 16, fill=127)
  black = {"image": np.zeros((40, 40, 3), np.uint8)}
  for seed in range(24):
    rng = np.random.default_rng(seed)
    left = int(max(0.0, rng.uniform(0, 24) - 8))
    top = int(max(0.0, rng.uniform(0, 24) - 8))
    host = host_op(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), jnp.array([top, left], jnp.int32)), host, atol_landmarks=0)
    grey = (host_op(black, np.random.default_rng(seed))["image"] == 127).all(-1)
    rows, cols = np.nonzero(grey)
    for side in (rows, cols):
      assert np.ptp(side) + 1 == min(17, 40 - side.min()), seed


def test_cutout_draws_follow_fixmatch():
  """CutoutAbs: left = int(max(0, U(0, w) - v / 2)), then top likewise."""
  for (h, w), size in [((24, 20), 10), ((16, 16), 5)]:
    top, left = _draws(device_ops.cutout(size), {"image": jnp.zeros((h, w, 3))}, 40000).T
    probs = np.outer(draws.cutout_corner(h, size), draws.cutout_corner(w, size))
    assert draws.categorical(np.stack([top, left], -1), probs) > P_MIN, size


# --- color jitter and RandAugment --------------------------------------------------------------


@pytest.mark.parametrize("strength", [(0.4, 0.4, 0.4), (0.0, 0.8, 1.5)])
def test_color_jitter_equals_pil_on_the_same_draws(strength, reference):
  host_op = reference.op("color_jitter", *strength)
  apply = jax.jit(device_ops.color_jitter(*strength).apply)
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


def test_color_jitter_draws_follow_torchvision():
  """ColorJitter.get_params: a uniformly random order, each factor ~ U(max(0, 1 - x), 1 + x)."""
  n = 40000
  d = _draws(device_ops.color_jitter(0.4, 0.2, 1.5), {"image": jnp.zeros((4, 4, 3))}, n)
  perms = list(itertools.permutations(range(3)))
  codes = np.array([perms.index(tuple(o)) for o in d["order"]])
  assert draws.categorical(codes, np.full(6, 1 / 6)) > P_MIN
  for i, (low, high) in enumerate([(0.6, 1.4), (0.8, 1.2), (0.0, 2.5)]):
    assert draws.ks(d["factor"][:, i], "uniform", low, high - low) > P_MIN, i


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


def test_rand_augment_pool_equals_pil(reference):
  """Every pool op at every magnitude and sign, exactly (landmarks to float32 rounding)."""
  assert device_ops.POOL == tuple(host_ops._RANDAUG_POOL)
  signed = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
  cases = [(name, v, negate) for name in device_ops.POOL for v in range(1, 10)
           for negate in ((False, True) if name in signed else (False,))]
  op, v, negate = (np.array(c) for c in zip(*cases))
  op = np.array([device_ops.POOL.index(name) for name in op])
  pool_op = jax.jit(jax.vmap(device_ops.pool_op, in_axes=(None, None, 0, 0, 0)))
  inputs = _pool_inputs()
  autocontrast = reference.pool("AutoContrast", inputs[3], "image", 1, None)["image"]
  assert autocontrast.max() == 254  # the float64 quirk is exercised
  for ex in inputs:
    images, points = jax.device_get(pool_op(jnp.asarray(ex["image"], jnp.float32),
                                            jnp.asarray(ex["landmarks"]), op, v, negate))
    for i, (name, magnitude, neg) in enumerate(cases):
      host = reference.pool(name, ex, "image", magnitude, pillow_reference.SignRng(neg))
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


def test_rand_augment_equals_pil_on_the_same_draws(reference):
  op = device_ops.rand_augment(3, p=0.7, key="image_strong")
  apply = jax.jit(op.apply)
  host_op = reference.op("rand_augment", 3, p=0.7, key="image_strong")
  for seed in range(12):
    ex = _face(seed, size=24, label=seed % 7)
    ex["image_strong"] = ex["image"]
    params = _host_rand_augment_params(np.random.default_rng(seed), 3, 0.7)
    host = host_op(ex, np.random.default_rng(seed))
    _assert_same(apply(_device(ex), params), host)


def test_rand_augment_draws_follow_fixmatch():
  """RandAugmentMC: n ops chosen with replacement (random.choices), each with a magnitude
  randint(1, 10) and a fire coin p; signed ops negate with probability 1/2."""
  n = 200000
  d = _draws(device_ops.rand_augment(2, p=0.6), {"image": jnp.zeros((8, 8, 3))}, n)
  k = len(device_ops.POOL)
  assert draws.categorical(d["op"], np.full((k, k), 1 / k**2)) > P_MIN  # with replacement
  magnitudes = np.full(10, 1 / 9)
  magnitudes[0] = 0
  for step in range(2):
    assert draws.categorical(d["op"][:, step], np.full(k, 1 / k)) > P_MIN, step
    assert draws.categorical(d["magnitude"][:, step], magnitudes) > P_MIN, step
    assert draws.binomial(d["fire"][:, step].sum(), n, 0.6) > P_MIN, step
    assert draws.binomial(d["negate"][:, step].sum(), n, 0.5) > P_MIN, step


# --- the batched pipeline ----------------------------------------------------------------------


def test_pipeline_without_randomness_equals_pil_end_to_end(reference):
  """Ops that draw nothing (or never fire) compose like the host pipeline, keys and all, and
  to_model_input gives the same model input from either."""
  spec = ("resize(30, resample='bicubic')|flip_lr(p=1.0, swap_landmarks=False)|copy('image_b')|"
          "pad_crop(0)|resize(20, key='image_b')|color_jitter|random_erasing(p=0.0, key='image_b')|"
          "flip_lr(p=0.0)|random_resized_crop(16, scale=(0.9, 1.0), ratio=(0.5, 0.6), "
          "key='image_b')")
  examples = [{**_face(seed, size=36), "index": np.int32(seed)} for seed in range(2)]
  host = [reference.parse(spec)(ex, np.random.default_rng(0)) for ex in examples]
  batch = {k: jnp.asarray(np.stack([ex[k] for ex in examples])) for k in examples[0]}
  out = jax.jit(device_ops.parse(spec))(batch, jax.random.key(0))
  for i, h in enumerate(host):
    _assert_same({k: v[i] for k, v in out.items()}, h)
  host_batch = {k: jnp.asarray(np.stack([h[k] for h in host])) for k in host[0]}
  for k, v in pipeline.to_model_input(out).items():
    np.testing.assert_allclose(v, pipeline.to_model_input(host_batch)[k], rtol=0, atol=1e-6)


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
