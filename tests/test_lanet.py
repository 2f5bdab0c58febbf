"""LA-Net: the numeric checks of lanet.md §1 and §7, its state, landmark files, a tiny run."""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import lanet as lanet_config
from fer_jax import optim, schedule, train
from fer_jax.data import landmark_files, pipeline, sources
from fer_jax.data import sampler as data_sampler
from fer_jax.methods import lanet, per_sample
from fer_jax.models import landmark_aware, weights
from tests import host_ops, steps
from tests.test_train import on_one_and_two_devices


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def test_parameter_counts_of_the_official_resnet18():
  model = landmark_aware.LandmarkAwareNet("resnet18", 7)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 64, 64, 3)))["params"]
  query = {k: v for k, v in params.items() if not k.startswith("projection")}
  assert _count(query) == 22_695_707  # f_q: trunk, both branches, laterals, heads, LDE nets
  assert _count(params["projection_u"]) + _count(params["projection_v"]) == 45_312
  assert _count(params["backbone"]) + _count(params["head"]) == 11_180_103  # inference


def test_heatmap_targets_and_weight_maps():
  points = jnp.array([[[100.0, 120.0], [9.0, 60.0], [500.0, 30.0]]])  # interior, edge, outside
  heat, weight = lanet.heatmap_targets(points, 56)
  interior, edge, outside = (heat[0, ..., i] for i in range(3))
  assert float(interior.max()) == 1.0 and interior[30, 25] == 1.0  # int(120/4+.5), int(100/4+.5)
  np.testing.assert_allclose(float(interior.sum()), 14.10, atol=5e-3)
  assert int((weight[0, ..., 0] == 10).sum()) == 45
  # x = 9 -> grid 2 (< 5): int() truncates toward zero, so the peak lands one pixel right.
  assert edge[15, 3] == 1.0
  assert float(outside.max()) == 0.0 and bool((weight[0, ..., 2] == 1).all())


def test_adaptive_wing_is_zero_only_at_equality():
  target = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  np.testing.assert_allclose(lanet.adaptive_wing(target, target), 0.0, atol=1e-6)
  for delta in (0.1, 0.7, -2.0):  # both branches of the piecewise loss
    assert bool((lanet.adaptive_wing(target + delta, target) > 0).all())


def test_progressive_sampler_counts_on_raf_db():
  counts = [705, 717, 281, 4772, 1982, 1290, 2524]  # LA-Net's class order
  labels = np.repeat(np.arange(7), counts)
  sampler = data_sampler.ProgressivelyBalancedEpochs(
    np.arange(len(labels)), labels, 0, num_epochs=80, num_classes=7, per_epoch=len(labels))
  expected = {0: counts, 1: [719, 730, 300, 4735, 1980, 1296, 2511],
              40: [1229, 1235, 1017, 3263, 1868, 1522, 2137],
              79: [1740, 1741, 1735, 1791, 1756, 1748, 1760]}
  for epoch, want in expected.items():
    assert sampler.class_counts(epoch).tolist() == want
  order = sampler.epoch_order(79)
  assert np.bincount(labels[order], minlength=7).tolist() == expected[79]
  # Fear (281) needs 1735 draws: six whole copies and 49 more without replacement.
  assert np.bincount(order[labels[order] == 2]).max() == 7


def test_raf_db_schedule_is_95_steps_by_80_epochs_to_zero():
  config = lanet_config.get_config("raf_db")
  steps = schedule.epoch_steps(config, 12271)
  assert steps == 95 and steps * config.num_epochs == 7600
  _, lr = optim.make(config.optimizer, steps, steps * config.num_epochs)
  for t in (0, 1000, 3800, 7599, 7600):
    np.testing.assert_allclose(float(lr["default"](t)), 1e-3 * (1 - t / 7600), atol=1e-9)
  assert config.input.sampler == "progressive" and config.optimizer.weight_decay == 0.0


def test_contrastive_loss_against_its_definition():
  rng = np.random.default_rng(0)

  def unit(n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  q, k, queue = unit(4, 5), unit(4, 5), unit(6, 5)
  labels, queue_labels = np.array([0, 1, 0, -4]), np.array([0, 2, 2, 1, 0, -9])
  total = 0.0
  for i in range(4):
    negatives = sum(np.exp(q[i] @ queue[m] / 0.1) for m in range(6)
                    if queue_labels[m] != labels[i])
    same = [j for j in range(4) if labels[j] == labels[i]]
    total += np.mean([-np.log(np.exp(q[i] @ k[j] / 0.1) / (np.exp(q[i] @ k[j] / 0.1) + negatives))
                      for j in same])
  got = lanet.contrastive(*map(jnp.asarray, (q, k, queue, queue_labels, labels)), 0.1)
  np.testing.assert_allclose(float(got), total / 4, rtol=1e-5)


def _setup(tmp_path):
  """The one-device program of the 1-vs-2-device test below (same config, same shapes, so the
  compile cache serves it), its initial state and a real raw batch of 8 with sample 3 twice
  (the step augments it)."""
  config = lanet_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  state, step, data = steps.sharded_step(config, jax.devices()[:1], augment=True)
  train_split = sources.load(config.dataset).train
  batch = next(iter(pipeline.train_dataset(train_split, "", batch_size=8, seed=0)))
  batch["label"] = (np.arange(8) % 7).astype(batch["label"].dtype)
  batch["index"] = np.array([0, 1, 2, 3, 4, 5, 6, 3], batch["index"].dtype)
  return config, lanet.build_model(config), state, step, pipeline.to_device(batch, data)


@pytest.mark.xdist_group("lanet_step")  # one worker: the second hits the cache
def test_first_visit_targets_history_queues_and_key_encoder(tmp_path):
  config, model, state, step, batch = _setup(tmp_path)
  new, metrics = step(state, batch, jax.random.key(1))
  # The history starts from the one-hot given label: t = 0.9 onehot + 0.1 d is confident.
  assert float(metrics["confident"]) == 1.0 and float(metrics["target_agrees_with_label"]) == 1.0
  history = np.asarray(new.extra["history"])
  assert bool(new.extra["visited"][:7].all()) and not bool(new.extra["visited"][7:].any())
  assert (history[:7].max(1) >= 0.9).all() and np.allclose(history[:7].sum(1), 1, atol=1e-5)
  assert (history[7:] == 0).all()
  # FIFO: the first batch fills rows 0..7 with its keys and pseudo-labels (= the labels here).
  assert int(new.extra["queue_ptr"]) == 8
  assert np.asarray(new.extra["queue_labels"][:8]).tolist() == list(batch["label"])
  np.testing.assert_allclose(np.linalg.norm(new.extra["queue_u"][:8], axis=1), 1, atol=1e-5)
  np.testing.assert_array_equal(new.extra["queue_v"][8:], state.extra["queue_v"][8:])
  assert config.lanet.queue_size == 32
  later = new
  for k in range(2, 5):
    later, _ = step(later, batch, jax.random.key(k))
  assert int(later.extra["queue_ptr"]) == 0  # a queue of 32 holds four batches: it wraps
  # The key encoder moved 0.1% of the way to the pre-update query weights.
  k0 = state.extra["key_params"]["backbone"]["conv1"]["kernel"]
  q0 = state.params["backbone"]["conv1"]["kernel"]
  np.testing.assert_allclose(new.extra["key_params"]["backbone"]["conv1"]["kernel"],
                             0.999 * k0 + 0.001 * q0, atol=1e-7)


def test_gradient_reaches_the_pair_weights_only_through_the_target(tmp_path):
  config, model, state, _, batch = _setup(tmp_path)
  batch = {**batch, "image": jnp.asarray(batch["image"], jnp.float32) / 255}

  def grads(lam_kl):
    c = ml_collections.ConfigDict(config.to_dict())
    c.lanet.lam_kl = lam_kl
    loss = functools.partial(lanet.loss_fn, model=model, config=c)
    pairs = {name: state.params[name] for name in ("pair_u", "pair_v")}
    # Differentiating the pair weights alone keeps the backbone's backward pass (and its
    # compilation) out of the test.
    return jax.jit(jax.grad(lambda q: loss({**state.params, **q}, state, batch, None)[0]))(pairs)

  with_kl, without_kl = grads(1.0), grads(0.0)
  for name in ("pair_u", "pair_v"):
    assert _count(jax.tree.map(lambda g: jnp.any(g != 0), with_kl[name])) > 0
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(with_kl[name])) > 0
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(without_kl[name])) == 0


def test_duplicate_indices_update_the_history_once_from_the_last():
  index = jnp.array([5, 2, 5, 7, 2])
  assert per_sample.last_occurrence(index).tolist() == [False, False, True, True, True]


def test_converted_resnet_fills_both_branches(tmp_path):
  config = lanet_config.get_config("synthetic,runlocal=true")
  model, initial = steps.initial_state(config, lanet)
  variables = {"params": initial.params, "batch_stats": initial.batch_stats}
  backbone = {c: {"backbone": variables[c]["backbone"]} for c in variables}
  backbone = jax.tree.map(lambda x: x + 1.0, backbone)  # tell it from the init
  weights.save(tmp_path / "w", backbone, {"arch": "resnet18", "has_head": False})
  config.init_from = str(tmp_path / "w")
  tx, _ = optim.make(config.optimizer, 2, 4)
  state = train.create_state(config, model, tx, lanet, 16, jax.random.key(0), None)
  for col in ("params", "batch_stats"):
    tree = state.params if col == "params" else state.batch_stats
    for layer in ("layer2_0", "layer3_1", "layer4_0"):
      jax.tree.map(np.testing.assert_array_equal, tree["landmark_branch"][layer],
                   backbone[col]["backbone"][layer])
  np.testing.assert_array_equal(state.extra["key_params"]["landmark_branch"]["layer2_0"]
                                ["conv1"]["kernel"], backbone["params"]["backbone"]["layer2_0"]
                                ["conv1"]["kernel"])


def test_torch_landmark_file_is_read_without_torch_and_checked(tmp_path):
  torch = pytest.importorskip("torch")
  points = np.random.default_rng(0).uniform(0, 224, (5, 19, 2)).astype(np.float32)
  torch.save(torch.from_numpy(points), tmp_path / "raf_train_19_landmarks.tensor")
  np.testing.assert_array_equal(
    landmark_files.read_torch_tensor(tmp_path / "raf_train_19_landmarks.tensor"), points)
  torch.save(torch.from_numpy(points[:, :5]).transpose(0, 1), tmp_path / "strided.tensor")
  np.testing.assert_array_equal(landmark_files.read_torch_tensor(tmp_path / "strided.tensor"),
                                points[:, :5].transpose(1, 0, 2))
  with pytest.raises(ValueError, match=r"raf_train_19_landmarks.tensor.*expected \(6, 19, 2\)"):
    landmark_files.load(tmp_path / "raf_train_19_landmarks.tensor", 6)
  (tmp_path / "bad.tensor").write_text("not a zip")
  with pytest.raises(ValueError, match="bad.tensor: not a torch.save tensor file"):
    landmark_files.load(tmp_path / "bad.tensor", 5)


def test_landmarks_attach_to_training_records_in_list_order(tmp_path):
  store = sources.ArrayStore(np.zeros((4, 100, 50, 3), np.uint8))
  split = sources.LabelledSource(store, np.array([0, 1]), ("a", "b"), rows=np.array([3, 1]))
  dataset = sources.Dataset("folder", ("x", "y"), split, split)
  points = np.arange(2 * 19 * 2, dtype=np.float32).reshape(2, 19, 2)
  np.save(tmp_path / "lm.npy", points)
  with_points = landmark_files.with_train_landmarks(dataset, str(tmp_path / "lm.npy"))
  # The file's points are in pixels of the 224 px resize (LA-Net's RAF-DB file); a record
  # carries them in its own image's pixels (here 50 wide, 100 high), so resize(224) restores
  # the file's values.
  np.testing.assert_allclose(with_points.train[1]["landmarks"],
                             points[1] * np.array([50 / 224, 100 / 224]), rtol=1e-6)
  assert with_points.train[0]["label"] == 0 and "landmarks" not in with_points.test[0]


def test_affectnet_68_points_map_to_the_19():
  points = np.stack([np.arange(68), 100 + np.arange(68)], -1).astype(np.float32)
  mapped = landmark_files.aflw19_from_68(points)
  assert mapped.shape == (19, 2)
  assert mapped[:, 0].tolist() == [17, 19, 21, 22, 24, 26, 36, 39, 39, 42, 45, 45, 31, 30, 35,
                                   48, 64, 54, 8]  # means: (37+38+40+41)/4 = 39, (62+66)/2 = 64


def test_crop_and_flip_move_landmarks_with_the_pixels():
  image = np.zeros((64, 64, 3), np.uint8)
  image[20:24, 40:44] = 255  # a bright square centred at (x, y) = (42, 22)
  points = np.tile(np.array([[42.0, 22.0]], np.float32), (19, 1))
  ex = {"image": image, "landmarks": points}
  rng = np.random.default_rng(3)
  out = host_ops.random_resized_crop(64, scale=(0.75, 1.0))(ex, rng)
  ys, xs = np.nonzero(out["image"][..., 0] > 128)
  np.testing.assert_allclose(out["landmarks"][0], [xs.mean() + 0.5, ys.mean() + 0.5], atol=1.0)
  flipped = host_ops.flip_lr(p=1.0, swap_landmarks=False)(ex, rng)
  assert flipped["landmarks"][0].tolist() == [22.0, 22.0]  # mirrored, same index


@pytest.mark.xdist_group("lanet_run")  # one worker computes the fixture once
def test_tiny_run_resumes_queues_and_history_exactly(tmp_path, lanet_run):
  config, finished = lanet_run
  straight = json.loads((finished / "summary.json").read_text())
  # A run killed after epoch 1: the same workdir without what epoch 2 wrote.
  shutil.copytree(finished, tmp_path / "resumed")
  for done in ("checkpoints/24", "model", "summary.json"):
    path = tmp_path / "resumed" / done
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  resumed = train.train_and_evaluate(config, tmp_path / "resumed")
  assert resumed["final_accuracy"] == straight["final_accuracy"]

  def extra(workdir):
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state",))
    restored = manager.restore(24, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]["state"]["extra"]

  a, b = extra(finished), extra(tmp_path / "resumed")
  assert int(a["queue_ptr"]) == int(b["queue_ptr"]) and np.asarray(a["visited"]).any()
  jax.tree.map(np.testing.assert_array_equal, a, b)
  exported, meta = weights.load(finished / "model")
  assert set(exported["params"]) == {"backbone", "head"} and meta["has_head"]


def test_config_refuses_datasets_without_landmarks():
  with pytest.raises(ValueError, match="LA-Net needs training landmarks"):
    lanet_config.get_config("ferplus")
  assert lanet_config.get_config("raf_db").dataset.train_landmarks == ""


@pytest.mark.xdist_group("lanet_step")  # one worker: the second hits the cache
def test_one_and_two_devices_keep_the_same_per_sample_state(tmp_path):
  config = lanet_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  (losses1, state1), (losses2, state2) = on_one_and_two_devices(config)
  np.testing.assert_allclose(losses1, losses2, rtol=1e-4)
  for key in ("history", "queue_u", "queue_v"):
    np.testing.assert_allclose(state1.extra[key], state2.extra[key], atol=1e-4)
  for key in ("visited", "queue_labels", "queue_ptr"):
    np.testing.assert_array_equal(state1.extra[key], state2.extra[key])
