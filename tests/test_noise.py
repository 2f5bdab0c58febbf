"""Label-noise protocols: the published counts, rates, named maps, label files and the command."""

import json
import pathlib
import random
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from fer_jax import cli, expressions
from fer_jax.data import label_noise, prepared, sources
from tests.test_datasets import _save, make_affectnet, make_ferplus, make_raf, raf_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind, flips", [("symmetric", (1219, 2481, 3703)),
                                         ("asymmetric_lanet", (1264, 2441, 3648))])
def test_lanet_seed0_flip_counts_on_raf_db_train_size(kind, flips):
  """lanet.md §7: Python random.seed(0) in file order flips exactly these counts of 12,271."""
  labels = np.random.default_rng(0).integers(0, 7, 12271)
  for rate, expected in zip((0.1, 0.2, 0.3), flips):
    noisy = label_noise.corrupt(labels, expressions.RAF_DB, kind, rate, seed=0)
    assert int((noisy != labels).sum()) == expected


def test_symmetric_rate_and_uniform_other_class():
  labels = np.repeat(np.arange(7), 3000)
  rates = []
  for seed in range(5):
    noisy = label_noise.corrupt(labels, expressions.RAF_DB, "symmetric", 0.3, seed)
    flipped = noisy != labels
    rates.append(flipped.mean())
    # A flip lands on each of the 6 other classes about equally often.
    offsets = (noisy[flipped] - labels[flipped]) % 7
    counts = np.bincount(offsets, minlength=7)
    assert counts[0] == 0 and counts[1:].min() > 0.85 * counts[1:].mean()
  assert abs(np.mean(rates) - 0.3) < 0.005 and max(abs(r - 0.3) for r in rates) < 0.015
  again = label_noise.corrupt(labels, expressions.RAF_DB, "symmetric", 0.3, 4)
  np.testing.assert_array_equal(again, noisy)  # same seed, same labels
  assert (label_noise.corrupt(labels, expressions.RAF_DB, "symmetric", 0.3, 5) != noisy).any()


def test_lanet_order_flips_the_same_images_to_lanets_new_classes():
  """LA-Net remaps RAF-DB's labels to its own order, then adds randint(1, 6) mod 7 there
  (lanet.md §4): order="lanet" gives exactly those labels, in RAF-DB's order."""
  raf, lanet = expressions.RAF_DB, expressions.LANET
  labels = np.random.default_rng(0).integers(0, 7, 12271)
  draw, expected = random.Random(0), []
  for label in labels:
    own = lanet.index(raf[label])
    if draw.random() < 0.3:
      own = (own + draw.randint(1, 6)) % 7
    expected.append(raf.index(lanet[own]))
  noisy = label_noise.corrupt(labels, raf, "symmetric", 0.3, 0, order="lanet")
  np.testing.assert_array_equal(noisy, expected)
  default = label_noise.corrupt(labels, raf, "symmetric", 0.3, 0)
  flipped = default != labels
  np.testing.assert_array_equal(noisy != labels, flipped)  # the same 3,703 images
  assert (noisy[flipped] != default[flipped]).mean() > 0.5  # most to another class
  # Another order and spelling of the same seven classes gives the same labels by name.
  names = [n.title() for n in expressions.AFFECTNET[:7]]
  relabelled = [names.index(raf[y].title()) for y in labels]
  got = label_noise.corrupt(relabelled, names, "symmetric", 0.3, 0, order="lanet")
  assert [names[y].lower() for y in got] == [raf[y] for y in noisy]
  with pytest.raises(cli.UsageError, match="noise order 'lanet' counts in the classes"):
    label_noise.corrupt(labels, expressions.FERPLUS, "symmetric", 0.3, 0, order="lanet")
  with pytest.raises(cli.UsageError, match="config.noise.order='lanet_'"):
    label_noise.check_config(ml_collections.ConfigDict(
      {"kind": "symmetric", "rate": 0.3, "seed": 0, "file": "", "order": "lanet_"}))


def test_asymmetric_maps_follow_class_names_in_each_dataset_order():
  def partners(kind, names):
    return {names[i]: names[j] for i, j in enumerate(label_noise.partner_map(kind, names))}

  lanet = {"anger": "disgust", "disgust": "anger", "fear": "surprise", "happiness": "neutral",
           "sadness": "neutral", "surprise": "anger", "neutral": "sadness"}
  for names in (expressions.RAF_DB, expressions.FERPLUS[:7], expressions.AFFECTNET[:7]):
    assert partners("asymmetric_lanet", names) == lanet
    assert partners("asymmetric_ncct", names) == {**lanet, "anger": "happiness"}
  assert partners("asymmetric_lanet", expressions.AFFECTNET)["contempt"] == "neutral"
  assert partners("asymmetric_ncct", expressions.FERPLUS)["contempt"] == "contempt"  # no partner
  # Index maps differ per order: RAF-DB anger (5) -> happiness (3); AffectNet 6 -> 1.
  assert label_noise.partner_map("asymmetric_ncct", expressions.RAF_DB)[5] == 3
  assert label_noise.partner_map("asymmetric_ncct", expressions.AFFECTNET)[6] == 1
  assert label_noise.partner_map("asymmetric_ncct", ("Happy", "Angry", "Sad"))[1] == 0  # synonyms
  labels = np.arange(7).repeat(500)
  noisy = label_noise.corrupt(labels, expressions.RAF_DB, "asymmetric_lanet", 0.4, 0)
  flipped = noisy != labels
  np.testing.assert_array_equal(noisy[flipped],
                                label_noise.partner_map("asymmetric_lanet", expressions.RAF_DB)[labels][flipped])
  assert abs(flipped.mean() - 0.4) < 0.03


def test_report_counts_flips_per_class():
  clean = np.array([0, 0, 1, 1, 2])
  noisy = np.array([0, 1, 1, 2, 0])
  report = label_noise.report(clean, noisy, ("a", "b", "c"), {"kind": "symmetric", "rate": 0.5})
  assert report["flipped"] == 3 and report["realised_rate"] == pytest.approx(0.6)
  assert report["transition_matrix"] == [[1, 1, 0], [0, 1, 1], [1, 0, 0]]
  assert report["per_class"]["a"] == {"clean_count": 2, "noisy_count": 2, "flipped": 1,
                                      "flip_rate": 0.5, "flipped_to": {"b": 1}}


@pytest.fixture(scope="module")
def raf(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("raf")
  make_raf(tmp / "raf")
  return tmp, sources.load(raf_config(tmp, tmp / "raf"))


def test_label_file_round_trip_and_checks(raf, tmp_path):
  _, dataset = raf
  noisy = label_noise.corrupt(dataset.train.labels, dataset.class_names, "symmetric", 0.5, 0)
  path = tmp_path / "noise05.txt"
  label_noise.write_label_file(path, dataset.train.names, noisy, dataset)
  first = path.read_text().splitlines()[0]
  assert first == f"{dataset.train.names[0]} {noisy[0] + 1}"  # RAF-DB format, labels 1..7
  np.testing.assert_array_equal(label_noise.read_label_file(path, dataset), noisy)
  with pytest.raises(FileExistsError):
    label_noise.write_label_file(path, dataset.train.names, noisy, dataset)
  lines = path.read_text().splitlines()

  def fails(text, pattern):
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(prepared.DataError, match=pattern):
      label_noise.read_label_file(bad, dataset)

  fails("\n".join([lines[1], lines[0], *lines[2:]]), "bad.txt, line 1: 'train_00002.jpg', "
        "expected 'train_00001.jpg'")
  fails("\n".join(lines[:-1]), "15 rows, expected one per training image \\(16\\)")
  fails("\n".join([*lines[:3], "train_00004.jpg 0", *lines[4:]]), "line 4: label '0': expected 1..7")


def test_noise_from_file_and_into_the_run_directory(raf, tmp_path):
  _, dataset = raf
  labels = dataset.train.labels.copy()
  labels[:4] = (labels[:4] + 1) % 7
  path = tmp_path / "given.txt"
  label_noise.write_label_file(path, dataset.train.names, labels, dataset)
  config = ml_collections.ConfigDict(dict(kind="file", rate=0.0, seed=0, file=str(path), order=""))
  noisy_set, report = label_noise.apply(dataset, config, tmp_path / "run/noise")
  assert report["flipped"] == 4 and report["realised_rate"] == pytest.approx(4 / 16)
  np.testing.assert_array_equal(noisy_set.train.labels, labels)
  record = noisy_set.train[0]
  assert record["label"] == labels[0] and record["clean_label"] == dataset.train.labels[0]
  np.testing.assert_array_equal(noisy_set.test.labels, dataset.test.labels)  # test stays clean
  saved = np.load(tmp_path / "run/noise/labels.npz")
  np.testing.assert_array_equal(saved["flipped"], np.arange(16) < 4)
  assert json.loads((tmp_path / "run/noise/report.json").read_text())["flipped"] == 4
  assert (tmp_path / "run/noise/train_labels.txt").read_text() == path.read_text()
  # A resumed run with other noise settings is refused rather than trained on other labels.
  config.update(dict(kind="symmetric", rate=0.5))
  with pytest.raises(ValueError, match="labels.npz holds other noisy labels"):
    label_noise.apply(dataset, config, tmp_path / "run/noise")


def test_noise_command_writes_a_shareable_file(raf, tmp_path):
  tmp, dataset = raf
  out = tmp_path / "noise03.txt"
  cmd = [sys.executable, "-m", "fer_jax.noise", "--dataset", "raf_db", "--data_dir",
         str(tmp / "raf"), "--kind", "asymmetric_ncct", "--rate", "0.3", "--seed", "3",
         "--out", str(out), "--dataset_field", f"prepared_dir={tmp / 'prepared'}"]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  expected = label_noise.corrupt(dataset.train.labels, dataset.class_names, "asymmetric_ncct", 0.3, 3)
  np.testing.assert_array_equal(label_noise.read_label_file(out, dataset), expected)
  report = json.loads(out.with_name("noise03.txt.report.json").read_text())
  assert report["map"]["anger"] == "happiness" and report["flipped"] == int(
    (expected != dataset.train.labels).sum())
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert again.returncode != 0 and "exists; not overwritten" in again.stderr
  lanet = tmp_path / "lanet03.txt"
  cmd[cmd.index("asymmetric_ncct")] = "symmetric"
  cmd[cmd.index(str(out))] = str(lanet)
  result = subprocess.run([*cmd, "--order", "lanet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  expected = label_noise.corrupt(dataset.train.labels, dataset.class_names, "symmetric", 0.3, 3,
                                 order="lanet")
  np.testing.assert_array_equal(label_noise.read_label_file(lanet, dataset), expected)
  assert json.loads(lanet.with_name("lanet03.txt.report.json").read_text())["order"] == "lanet"


def test_instance_noise_flips_the_most_confusable_samples_to_their_top_wrong_class():
  rng = np.random.default_rng(0)
  for n, rate in ((50, 0.3), (100, 0.29), (57, 0.29)):
    labels = rng.integers(0, 7, n)
    probabilities = rng.dirichlet(np.ones(7), n)
    noisy = label_noise.instance_dependent(labels, probabilities, rate)
    flipped = noisy != labels
    assert flipped.sum() == round(n * rate)  # 29 of 100, where the code's int() gives 28
    wrong = probabilities.copy()
    wrong[np.arange(n), labels] = -1
    np.testing.assert_array_equal(noisy[flipped], wrong.argmax(1)[flipped])
    assert wrong.max(1)[flipped].min() > wrong.max(1)[~flipped].max()
    np.testing.assert_array_equal(label_noise.instance_dependent(labels, probabilities, rate),
                                  noisy)
  # Equal scores: the lower index first.
  even = np.full((4, 3), [0.5, 0.3, 0.2])
  np.testing.assert_array_equal(label_noise.instance_dependent([0, 0, 0, 0], even, 0.5),
                                [1, 1, 0, 0])


def test_recording_is_a_running_mean_over_the_epochs():
  from fer_jax.methods import ce

  extra = {"train_probabilities": np.zeros((2, 3), np.float32), "probability_epochs": 0}
  passes = [np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]), np.array([[0.6, 0.1, 0.3],
                                                                      [0.0, 0.5, 0.5]]),
            np.array([[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])]
  for p in passes:
    extra = ce.after_epoch(extra, {"probabilities": p.astype(np.float32)}, None)
  assert int(extra["probability_epochs"]) == 3
  np.testing.assert_allclose(extra["train_probabilities"], np.mean(passes, 0), rtol=1e-6)


def _record(tmp_path, name, **fields):
  from configs import baseline
  from fer_jax import train

  config = baseline.get_config("synthetic,runlocal=true,record_train_probabilities=true")
  config.dataset.update(cache_dir=str(tmp_path / "cache"), num_train=16)
  config.progress_bar = False
  config.update(fields)
  train.train_and_evaluate(config, tmp_path / name)
  return config


def test_recorded_predictions_resume_exactly_and_give_instance_noise(tmp_path):
  config = _record(tmp_path, "whole")
  _record(tmp_path, "split", num_epochs=1)
  _record(tmp_path, "split")
  saved = {n: np.load(tmp_path / n / label_noise.PREDICTIONS_FILE) for n in ("whole", "split")}
  assert int(saved["split"]["epochs"]) == 2 and bool(saved["split"]["clean"])
  np.testing.assert_array_equal(saved["split"]["probabilities"], saved["whole"]["probabilities"])
  # noise_kind=instance in a run: the same noise/ files as the other kinds.
  dataset = sources.load(config.dataset)
  noise = dict(config.noise, kind="instance", rate=0.25, predictions=str(tmp_path / "whole"))
  noisy_set, report = label_noise.apply(dataset, ml_collections.ConfigDict(noise),
                                        tmp_path / "run/noise")
  expected = label_noise.instance_dependent(dataset.train.labels,
                                            saved["whole"]["probabilities"], 0.25)
  np.testing.assert_array_equal(noisy_set.train.labels, expected)
  assert report == label_noise.report(dataset.train.labels, expected, dataset.class_names, {
    "kind": "instance", "rate": 0.25, "predictions": str(tmp_path / "whole")})
  assert report["flipped"] == 4
  npz = np.load(tmp_path / "run/noise/labels.npz")
  np.testing.assert_array_equal(npz["flipped"], expected != dataset.train.labels)
  # The command writes the same labels; a model of other classes is one line, exit 2.
  fields = [f"--dataset_field={k}={config.dataset[k]}" for k in ("num_train", "num_test",
                                                                 "cache_dir")]
  out = tmp_path / "idn.txt"
  cmd = [sys.executable, "-m", "fer_jax.noise", "--dataset", "synthetic", "--kind", "instance",
         "--rate", "0.25", "--checkpoint", str(tmp_path / "whole"), "--out", str(out), *fields]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  np.testing.assert_array_equal(label_noise.read_label_file(out, dataset), expected)
  assert json.loads(out.with_name("idn.txt.report.json").read_text()) == report
  other = tmp_path / "ferplus_model"
  other.mkdir()
  np.savez(other / label_noise.PREDICTIONS_FILE, probabilities=np.full((16, 8), 0.125),
           class_names=np.array(expressions.FERPLUS), names=saved["whole"]["names"],
           epochs=np.int32(2), clean=True)
  cmd[cmd.index(str(tmp_path / "whole"))] = str(other)
  cmd[cmd.index(str(out))] = str(tmp_path / "other.txt")
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == cli.USAGE_EXIT and "Traceback" not in result.stderr
  assert "the model's classes ['neutral', 'happiness'" in result.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "other.txt").exists()


def _dataset_fixture(name, root, prepared_dir):
  """A small copy of dataset `name` under `root`, its loaded Dataset and the noise command's
  flags that load the same copy."""
  fields = {"prepared_dir": str(prepared_dir)}
  if name == "raf_db":
    make_raf(root)
  elif name == "ferplus":
    make_ferplus(root)
    fields.update(num_classes=8, train_split="train+validation")
  elif name == "affectnet":
    make_affectnet(root)
    fields.update(num_classes=8)
  else:
    for i, cls in enumerate(("sad", "happy", "angry", "happy", "sad", "angry", "happy")):
      _save(root / "train" / cls / f"{i} é.png", np.full((8, 8, 3), 30 * i, np.uint8), "PNG")
    _save(root / "test/sad/t.png", np.zeros((8, 8, 3), np.uint8), "PNG")
  dataset = sources.load(sources.default_config(name, data_dir=str(root), **fields))
  flags = ["--dataset", name, "--data_dir", str(root)]
  for key, value in fields.items():
    flags += ["--dataset_field", f"{key}={value}"]
  return dataset, flags


@pytest.mark.parametrize("name", ["raf_db", "ferplus", "affectnet", "folder"])
def test_instance_noise_command_on_every_dataset(name, tmp_path):
  """The command reads a CE model's predictions on each dataset (in its own label-file format),
  matching the model's classes by name whatever their order."""
  dataset, flags = _dataset_fixture(name, tmp_path / "data", tmp_path / "prepared")
  n, num_classes = len(dataset.train.labels), len(dataset.class_names)
  probabilities = np.random.default_rng(5).dirichlet(np.ones(num_classes), n).astype(np.float32)
  model = tmp_path / "ce_model"
  model.mkdir()
  label_noise.write_train_probabilities(model, probabilities, 3, dataset)
  # The same predictions saved by a model whose head lists the classes in reverse order.
  reversed_model = tmp_path / "ce_model_reversed"
  reversed_model.mkdir()
  with np.load(model / label_noise.PREDICTIONS_FILE) as saved:
    np.savez(reversed_model / label_noise.PREDICTIONS_FILE,
             **{**saved, "probabilities": saved["probabilities"][:, ::-1],
                "class_names": saved["class_names"][::-1]})
  expected = label_noise.instance_dependent(dataset.train.labels, probabilities, 0.4)
  assert (expected != dataset.train.labels).sum() == round(n * 0.4) > 0
  for run in (model, reversed_model):
    out = tmp_path / f"{run.name}.txt"
    cmd = [sys.executable, "-m", "fer_jax.noise", *flags, "--kind", "instance", "--rate", "0.4",
           "--checkpoint", str(run), "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(label_noise.read_label_file(out, dataset), expected)
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["flipped"] == round(n * 0.4) and report["kind"] == "instance"
