"""The trainer: multi-device equivalence, end-to-end learning, resume, outputs, bad input."""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import baseline
from fer_jax import inference, train
from fer_jax.data import augment, device_ops, pipeline, sources
from fer_jax.inference import outputs
from tests import steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, **overrides):
  config = baseline.get_config("runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.progress_bar = False
  for key, value in overrides.items():
    target = config
    *path, leaf = key.split(".")
    for p in path:
      target = target[p]
    target[leaf] = value
  return config


def _run_steps(config, devices, batches, augment=False):
  state, step, data = steps.sharded_step(config, devices, augment=augment)
  losses = []
  for batch in batches:
    state, metrics = step(state, pipeline.to_device(batch, data), jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state)


def on_one_and_two_devices(config, num_steps=3):
  """((losses, final state) on one device, the same on two) for `num_steps` real batches of 8,
  augmented inside the step as the trainer does."""
  assert jax.device_count() == 2, "conftest forces 2 host devices"
  dataset = sources.load(config.dataset)
  it = iter(pipeline.train_dataset(dataset.train, "", batch_size=8, seed=0))
  batches = [next(it) for _ in range(num_steps)]
  return (_run_steps(config, jax.devices()[:1], batches, augment=True),
          _run_steps(config, jax.devices(), batches, augment=True))


def test_one_and_two_devices_give_the_same_training(tmp_path):
  config = tiny_config(tmp_path)
  (losses1, state1), (losses2, state2) = on_one_and_two_devices(config)
  np.testing.assert_allclose(losses1, losses2, rtol=1e-4)  # float reassociation of the sharded sums
  assert losses1[0] != losses1[2]  # the steps really changed the model
  # Global-batch BatchNorm: running stats agree, not per-device halves (which differ by ~10%;
  # the sharded reductions reassociate float sums, ~1e-4 relative).
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-4),
               state1.batch_stats, state2.batch_stats)
  # Adam divides by sqrt(v): an element whose gradient is ~0 can move by up to one lr step per
  # step from float reassociation of the sharded reduction, so params agree to ~lr per step.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=0,
                                 atol=len(losses1) * config.optimizer.lr),
               state1.params, state2.params)


@pytest.fixture(scope="session")  # not module: xdist may run other modules between its users
def trained_run(tmp_path_factory):
  """A small synthetic run that should clearly learn: 600 images, 32 px, width 16."""
  tmp_path = tmp_path_factory.mktemp("run")
  config = tiny_config(tmp_path, **{
    "dataset.num_train": 600, "dataset.num_test": 140, "model.width": 16, "num_epochs": 10,
    "batch_size": 32, "eval_batch_size": 32, "optimizer.lr": 2e-3, "optimizer.schedule": "constant",
    "input.train_ops": "resize(32)|flip_lr", "checkpoint_every_steps": 1000,
  })
  summary = train.train_and_evaluate(config, tmp_path / "work")
  return tmp_path / "work", summary


@pytest.mark.xdist_group("trained_run")  # one worker computes the fixture once
def test_tiny_training_run_beats_chance_and_writes_its_outputs(trained_run):
  workdir, summary = trained_run
  # Chance is 1/7 (mean class accuracy of any constant guess); always predicting the majority
  # class (happiness) scores 0.26 accuracy. This seeded run reaches ~0.39 / ~0.32.
  assert summary["final_accuracy"] > 0.33, summary["history"]
  assert summary["mean_class_accuracy"] > 0.25, summary["history"]
  assert summary["epochs"] == 10 and len(summary["history"]) == 10
  accs = [h["accuracy"] for h in summary["history"]]
  assert summary["best_accuracy"] == max(accs)
  np.testing.assert_allclose(summary["mean_last5_accuracy"], np.mean(accs[-5:]))
  cm = np.array(summary["confusion_matrix"])
  assert cm.shape == (7, 7) and cm.sum() == 140  # every test image counted exactly once
  np.testing.assert_allclose(np.trace(cm) / 140, summary["final_accuracy"])
  for name in ("summary.json", "confusion_matrix.png", "config.json", "metrics.jsonl",
               "model/model.json", "model/variables.npz"):
    assert (workdir / name).is_file(), name
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("eval_accuracy" in x for x in lines) and any("train_loss" in x for x in lines)


@pytest.mark.xdist_group("trained_run")  # one worker computes the fixture once
def test_predict_matches_training_eval_and_refuses_bad_input(trained_run, tmp_path):
  workdir, _ = trained_run
  dataset = sources.load(tiny_config(tmp_path, **{
    "dataset.num_train": 600, "dataset.num_test": 140}).dataset)
  from PIL import Image

  paths = []
  for i in range(20):
    paths.append(tmp_path / f"face{i:02d}.png")
    Image.fromarray(dataset.test.store.images[i]).save(paths[-1])
  model, variables, meta = inference.load_model(workdir)  # a workdir resolves to its model/
  probs = inference.predict(model, variables, meta, inference.list_images([tmp_path]), batch_size=8)
  assert probs.shape == (20, 7)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  # Same probabilities as the trainer's eval transform on these images (PNG is lossless).
  batch = next(pipeline.eval_batches(dataset.test, "resize(32)", 20))
  logits = model.apply(variables, pipeline.to_model_input(batch)["image"], train=False)[0]
  np.testing.assert_allclose(probs, jax.nn.softmax(logits, -1), atol=1e-5)
  preds = probs.argmax(1)
  out = tmp_path / "preds.csv"
  outputs.write_csv(out, paths, probs, meta["class_names"])
  header, *rows = [line.split(",") for line in out.read_text().splitlines()]
  assert header == ["path", *meta["class_names"], "predicted"] and len(rows) == 20
  assert rows[0][-1] == meta["class_names"][preds[0]]
  with pytest.raises(FileExistsError):
    outputs.write_csv(out, paths, probs, meta["class_names"])
  (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match="broken.jpg: unreadable image"):
    inference.predict(model, variables, meta, [tmp_path / "broken.jpg"])
  with pytest.raises(FileNotFoundError, match="nope.jpg"):
    inference.list_images([tmp_path / "nope.jpg"])


def _main(workdir, *extra):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=str(ROOT))
  return subprocess.Popen(
    [sys.executable, "-m", "fer_jax.main", "--config", "configs/baseline.py:runlocal=true",
     "--workdir", str(workdir), "--config.progress_bar=false", "--config.num_epochs=2",
     "--config.checkpoint_every_steps=5", "--config.dataset.cache_dir", str(workdir.parent),
     "--config.optimizer.lr=0.002", *extra],
    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_a_checkpoint(process, workdir, timeout=240):
  ckpts = workdir / "checkpoints"
  deadline = time.time() + timeout
  while not (ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()
    time.sleep(0.05)


def test_killed_run_resumes_to_the_same_result(tmp_path):
  # One run after the other: the later ones find the dataset and the compiled steps cached.
  reference = _main(tmp_path / "ref")
  out = reference.communicate()[0]
  assert reference.returncode == 0, out
  killed = _main(tmp_path / "killed")
  _wait_for_a_checkpoint(killed, tmp_path / "killed")
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / "killed" / "summary.json").exists()  # it really died mid-run
  resumed = _main(tmp_path / "killed")
  log = resumed.communicate()[0]
  assert resumed.returncode == 0, log
  assert "Resumed from" in log
  # The steps trained twice are logged once: rows after the checkpoint were dropped on resume.
  rows = [json.loads(x) for x in (tmp_path / "killed/metrics.jsonl").read_text().splitlines()]
  ref_rows = [json.loads(x) for x in (tmp_path / "ref/metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], sorted(r)) for r in rows] == [(r["step"], sorted(r)) for r in ref_rows]
  ref = json.loads((tmp_path / "ref" / "summary.json").read_text())
  got = json.loads((tmp_path / "killed" / "summary.json").read_text())
  assert len(got["history"]) == 2
  for a, b in zip(ref["history"], got["history"]):
    assert a["accuracy"] == b["accuracy"]
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  # The command-line override reached the saved config.
  saved = json.loads((tmp_path / "ref" / "config.json").read_text())
  assert saved["optimizer"]["lr"] == 0.002 and saved["num_epochs"] == 2


def test_ctrl_c_stops_with_one_line_naming_the_step_and_the_checkpoint(tmp_path):
  run = _main(tmp_path / "run", "--config.num_epochs=50")
  _wait_for_a_checkpoint(run, tmp_path / "run")
  run.send_signal(signal.SIGINT)
  out = run.communicate(timeout=120)[0]
  assert run.returncode == 130, out
  assert "Traceback" not in out, out
  last = out.strip().splitlines()[-1]
  assert last.startswith("fer_jax main: interrupted") and "stopped after step" in last, last
  assert "checkpoint of step" in last and "the same command resumes" in last, last


def test_mistyped_override_and_changed_config_are_refused(tmp_path):
  bad = _main(tmp_path / "a", "--config.optimizer.learning_rate=1")
  out = bad.communicate()[0]
  assert bad.returncode != 0 and "learning_rate" in out
  config = tiny_config(tmp_path)
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "config.json").write_text(json.dumps(
    json.loads(config.to_json_best_effort()) | {"seed": 5}))
  with pytest.raises(ValueError, match=r"config.json: .*different config \(fields \['seed'\]\)"):
    train.train_and_evaluate(config, tmp_path / "b")


def test_eval_batches_pad_and_mask_so_each_example_counts_once(tmp_path):
  config = tiny_config(tmp_path, **{"dataset.num_test": 13})
  test = sources.load(config.dataset).test
  batches = list(pipeline.eval_batches(test, "resize(32)", 4))
  assert len(batches) == 4 and all(b["image"].shape == (4, 32, 32, 3) for b in batches)
  mask = np.concatenate([b["_mask"] for b in batches])
  assert mask.sum() == 13 and not mask[13:].any()
  labels = np.concatenate([b["label"] for b in batches])[:13]
  np.testing.assert_array_equal(labels, test.labels)


def test_missing_init_from_and_bad_batch_size_name_the_problem(tmp_path):
  config = tiny_config(tmp_path, init_from=str(tmp_path / "no_such_model"))
  with pytest.raises(FileNotFoundError, match="no_such_model/variables.npz not found"):
    train.train_and_evaluate(config, tmp_path / "w1")
  config = tiny_config(tmp_path, batch_size=7)
  with pytest.raises(ValueError, match="config.batch_size=7"):
    train.train_and_evaluate(config, tmp_path / "w2")
  config = tiny_config(tmp_path, method="eca")
  with pytest.raises(ValueError, match="config.method='eca'.*did you mean 'eac'"):
    train.train_and_evaluate(config, tmp_path / "w3")
  # A refused start writes nothing: fixing the mistake, the same command just runs.
  assert not any((tmp_path / w).exists() for w in ("w1", "w2", "w3"))


def test_raf_db_run_with_noise_records_it_and_a_missing_data_dir_is_named(tmp_path):
  from tests.test_datasets import make_raf

  make_raf(tmp_path / "raf")
  config = baseline.get_config("raf_db,noise=0.3,runlocal=true")
  config.dataset.data_dir = str(tmp_path / "raf")
  config.dataset.prepared_dir = str(tmp_path / "prepared")
  config.progress_bar = False
  summary = train.train_and_evaluate(config, tmp_path / "run")
  assert summary["dataset"]["num_train"] == 16 and summary["dataset"]["num_test"] == 8
  assert summary["noise"]["kind"] == "symmetric" and summary["noise"]["rate"] == 0.3
  saved = np.load(tmp_path / "run/noise/labels.npz")
  assert summary["noise"]["flipped"] == int(saved["flipped"].sum()) > 0
  lines = (tmp_path / "run/noise/train_labels.txt").read_text().splitlines()
  assert len(lines) == 16 and lines[0].split()[0] == "train_00001.jpg"
  config.dataset.data_dir = str(tmp_path / "no_such_copy")
  with pytest.raises(ValueError, match="data_dir=.*no_such_copy: no such directory"):
    train.train_and_evaluate(config, tmp_path / "other")
  assert not (tmp_path / "other").exists()  # nothing written: the fixed command can use it


def test_an_extended_run_refreshes_every_output_and_keeps_the_earlier_model(tmp_path):
  config = tiny_config(tmp_path, num_epochs=1)
  first = train.train_and_evaluate(config, tmp_path / "run")
  config.num_epochs = 2
  second = train.train_and_evaluate(config, tmp_path / "run")
  steps_per_epoch = second["history"][0]["step"]
  assert len(first["history"]) == 1 and len(second["history"]) == 2
  saved = json.loads((tmp_path / "run/summary.json").read_text())
  assert saved["history"] == second["history"]
  model = json.loads((tmp_path / "run/model/model.json").read_text())
  earlier = json.loads((tmp_path / f"run/model_step{steps_per_epoch}/model.json").read_text())
  assert model["step"] == 2 * steps_per_epoch and earlier["step"] == steps_per_epoch
  # The refreshed model is the one the summary describes: its eval reproduces the accuracy.
  model, variables, meta = inference.load_model(tmp_path / "run/model")
  test = sources.load(config.dataset).test
  resize = augment.resize(meta["image_size"])
  images = np.stack([resize({"image": test[i]["image"]}, None)["image"] for i in range(len(test))])
  probs = np.asarray(inference.probability_fn(model, variables, meta)(images))
  accuracy = float(np.mean(probs.argmax(1) == test.labels))
  # Within one image: the host resize here and the device resize of training may differ by a
  # uint8 level.
  assert accuracy == pytest.approx(second["final_accuracy"], abs=1.5 / len(test))
  # Each logged step once, though the run was resumed.
  rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  keys = [(r["step"], tuple(sorted(r))) for r in rows]
  assert len(keys) == len(set(keys)) and max(r["step"] for r in rows) == 2 * steps_per_epoch


def test_bfloat16_compute_keeps_float32_state_and_tracks_float32(tmp_path):
  """Mixed precision: activations in bf16, params/BN stats/optimiser in f32, same training."""
  config = tiny_config(tmp_path)
  dataset = sources.load(config.dataset)
  it = iter(pipeline.train_dataset(dataset.train, "", batch_size=8, seed=0))
  batches = [next(it)] * 6  # one batch, repeated: the loss must fall
  config.input.train_ops = "resize(32)"  # the same images every step
  losses32, state32 = _run_steps(config, jax.devices()[:1], batches, augment=True)
  config.dtype = "bfloat16"
  losses16, state16 = _run_steps(config, jax.devices()[:1], batches, augment=True)
  for tree in (state16.params, state16.batch_stats, state16.opt_state):
    assert {str(x.dtype) for x in jax.tree.leaves(tree) if hasattr(x, "dtype")
            and np.issubdtype(x.dtype, np.floating)} == {"float32"}
  assert losses16[-1] < losses16[0] - 0.2
  np.testing.assert_allclose(losses16, losses32, rtol=0.05)
  model = train.get_method(config).build_model(config)
  resized = device_ops.parse(config.input.train_ops)(
    jax.tree.map(jax.numpy.asarray, batches[0]), jax.random.key(0))
  x = pipeline.to_model_input(resized, dtype=jax.numpy.bfloat16)["image"]
  logits, feats = model.apply({"params": state16.params, "batch_stats": state16.batch_stats}, x)
  assert feats["stage4"].dtype == jax.numpy.bfloat16 and logits.dtype == jax.numpy.float32


def _two_host_run(workdir, epochs):
  import socket

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=str(ROOT),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")  # CPU collectives across processes
  procs = [subprocess.Popen(
    [sys.executable, "-m", "fer_jax.main", "--config", "configs/baseline.py:runlocal=true",
     "--workdir", str(workdir), "--config.progress_bar=false", f"--config.num_epochs={epochs}",
     "--config.dataset.cache_dir", str(workdir.parent), "--distributed",
     f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for i in range(2)]
  logs = [p.communicate(timeout=400)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  return logs


def test_two_processes_train_as_one_and_resume_each_data_position(tmp_path):
  """Multi-host data parallelism on one machine: two processes of one CPU device each."""
  workdir = tmp_path / "run"
  logs = _two_host_run(workdir, 1)
  assert "process 0 of 2" in logs[0] and "process 1 of 2" in logs[1]
  first = json.loads((workdir / "summary.json").read_text())
  assert len(first["history"]) == 1
  # Both processes evaluate the same global model on disjoint halves of the test set.
  accuracies = [[line.split("eval_accuracy=")[1].split(",")[0] for line in log.splitlines()
                 if "eval_accuracy=" in line] for log in logs]
  assert accuracies[0] == accuracies[1] and len(accuracies[0]) == 1
  saved = next(p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  per_process = json.loads((saved / "data" / "metadata").read_text())["per_process"]
  assert len(per_process) == 2  # each host's iterator position is kept
  logs = _two_host_run(workdir, 2)  # one more epoch: both resume from their own position
  assert all("Resumed from" in log for log in logs)
  assert len(json.loads((workdir / "summary.json").read_text())["history"]) == 2


def test_a_workdir_of_an_earlier_version_resumes_unless_a_field_changes(tmp_path):
  config = baseline.get_config("synthetic")
  saved = json.loads(config.to_json_best_effort())
  del saved["noise"]["predictions"]  # a field added later, off here ("")
  del saved["input"]["mean"]  # and one that is an empty list here
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert train._check_config(tmp_path, config) == saved
  saved["optimizer"]["lr"] *= 2
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"optimizer\.lr"):
    train._check_config(tmp_path, config)
  del saved["optimizer"]["lr"]  # an added field that is on (not False, "" or None) changes the run
  saved["optimizer"]["lr"] = config.optimizer.lr
  del saved["batch_size"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="batch_size"):
    train._check_config(tmp_path, config)
