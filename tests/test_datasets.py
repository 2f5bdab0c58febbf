"""Dataset readers on tiny fake trees in each benchmark's own layout, and their bad-input errors."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from fer_jax import expressions
from fer_jax.data import ferplus, pipeline, prepared, sources

RAF_TRAIN_PER_CLASS = (3, 1, 2, 4, 2, 1, 3)  # 16 train images, imbalanced like RAF-DB
RAF_TEST_PER_CLASS = (1, 1, 1, 2, 1, 1, 1)


def _image(seed, size=(12, 12)):
  return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _save(path, pixels, fmt="JPEG"):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, format=fmt)


def make_raf(root):
  """A RAF-DB basic tree: list file in the official order (train rows, then test rows)."""
  lines = []
  for split, per_class in (("train", RAF_TRAIN_PER_CLASS), ("test", RAF_TEST_PER_CLASS)):
    labels = np.repeat(np.arange(1, 8), per_class)
    np.random.default_rng(1).shuffle(labels)
    for i, label in enumerate(labels, 1):
      name = f"{split}_{i:05d}" if split == "train" else f"{split}_{i:04d}"
      _save(root / "Image/aligned" / f"{name}_aligned.jpg", _image(len(lines)))
      _save(root / "Image/original" / f"{name}.jpg", _image(len(lines), (20, 16)))
      lines.append(f"{name}.jpg {label}")
  (root / "EmoLabel").mkdir(parents=True)
  (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
  return lines


def raf_config(tmp_path, root, **overrides):
  return sources.default_config("raf_db", **{"data_dir": str(root),
                                             "prepared_dir": str(tmp_path / "prepared"),
                                             **overrides})


def test_raf_db_counts_order_and_pixels(tmp_path):
  lines = make_raf(tmp_path / "raf")
  dataset = sources.load(raf_config(tmp_path, tmp_path / "raf"))
  assert dataset.class_names == expressions.RAF_DB
  np.testing.assert_array_equal(dataset.class_counts("train"), RAF_TRAIN_PER_CLASS)
  np.testing.assert_array_equal(dataset.class_counts("test"), RAF_TEST_PER_CLASS)
  train_lines = [line for line in lines if line.startswith("train")]
  assert list(dataset.train.names) == [line.split()[0] for line in train_lines]  # file order
  # Label k (1-based, Surprise first) is class k-1.
  np.testing.assert_array_equal(dataset.train.labels,
                                [int(line.split()[1]) - 1 for line in train_lines])
  record = dataset.train[2]
  expected = np.asarray(Image.open(tmp_path / "raf/Image/aligned/train_00003_aligned.jpg"))
  np.testing.assert_array_equal(record["image"], expected)
  assert record["image"].dtype == np.uint8 and record["index"] == 2
  original = sources.load(raf_config(tmp_path, tmp_path / "raf", images="original"))
  assert original.train[0]["image"].shape == (20, 16, 3)


def test_raf_db_bad_inputs_name_the_file_and_line(tmp_path):
  root = tmp_path / "raf"
  with pytest.raises(prepared.DataError, match="data_dir is empty"):
    sources.load(raf_config(tmp_path, ""))
  with pytest.raises(prepared.DataError, match="no such directory"):
    sources.load(raf_config(tmp_path, root))
  make_raf(root)
  label_file = root / "EmoLabel/list_patition_label.txt"
  good = label_file.read_text()

  def fails(text, pattern):
    label_file.write_text(text)
    with pytest.raises(prepared.DataError, match=pattern):
      sources.load(raf_config(tmp_path, root, prepared_dir=str(tmp_path / f"p{len(text)}")))

  fails(good.replace("train_00002.jpg", "train_00002.jpg x", 1), "line 2: expected '<name> <label>'")
  fails(good.replace(good.splitlines()[2], "train_00003.jpg 8"), "line 3: label '8' .* 1..7")
  fails(good + "train_99999.jpg 1\n", "line 25: train_99999.jpg: expected the image .*"
        "train_99999_aligned.jpg, which does not exist")
  label_file.unlink()
  with pytest.raises(prepared.DataError, match="missing .*list_patition_label.txt"):
    sources.load(raf_config(tmp_path, root))


def test_corrupt_images_fail_or_skip_and_a_changed_copy_is_prepared_anew(tmp_path):
  root = tmp_path / "raf"
  make_raf(root)
  broken = root / "Image/aligned/train_00004_aligned.jpg"
  good = broken.read_bytes()
  broken.write_bytes(b"\xff\xd8 not a jpeg")
  with pytest.raises(prepared.DataError, match="(?s)train_00004.*corrupt_images=skip"):
    sources.load(raf_config(tmp_path, root))
  # The same prepared copy serves the skip policy: one image fewer, the rest unchanged.
  dataset = sources.load(raf_config(tmp_path, root, corrupt_images="skip"))
  assert len(dataset.train) == sum(RAF_TRAIN_PER_CLASS) - 1
  assert "train_00004.jpg" not in dataset.train.names
  # The image replaced by a good one: the copy is prepared again, and the image is read.
  broken.write_bytes(good)
  dataset = sources.load(raf_config(tmp_path, root))
  assert len(dataset.train) == sum(RAF_TRAIN_PER_CLASS)
  position = dataset.train.names.index("train_00004.jpg")
  # An image changed after preparation is read as it is now, never from the stale copy.
  other = root / "Image/aligned/train_00001_aligned.jpg"
  broken.write_bytes(other.read_bytes())
  changed = sources.load(raf_config(tmp_path, root)).train[position]["image"]
  np.testing.assert_array_equal(changed, dataset.train[0]["image"])
  assert not np.array_equal(changed, dataset.train[position]["image"])
  # So is a changed label file.
  label_file = root / "EmoLabel/list_patition_label.txt"
  first, *rest = label_file.read_text().splitlines()
  name, label = first.split()
  label_file.write_text("\n".join([f"{name} {int(label) % 7 + 1}", *rest]) + "\n")
  relabelled = sources.load(raf_config(tmp_path, root))
  assert relabelled.train.labels[0] == int(label) % 7  # 0-based: the new label
  prepared_dirs = list((tmp_path / "prepared").iterdir())
  assert len(prepared_dirs) == 4  # one per state of the copy, none overwritten


@pytest.mark.parametrize(
  "votes, mode, expected",
  [
    # A lone vote is dropped before the rules: 6 of the 8 remaining votes is a majority.
    ((0, 6, 2, 1, 1, 0, 0, 0, 0, 0), "majority", (0, 1, 0, 0, 0, 0, 0, 0)),
    ((4, 4, 2, 0, 0, 0, 0, 0, 0, 0), "majority", None),  # no majority: dropped
    ((0, 0, 0, 0, 0, 0, 0, 0, 2, 8), "majority", None),  # majority is NF: dropped
    ((5, 3, 2, 0, 0, 0, 0, 0, 0, 0), "crossentropy", (5 / 8, 3 / 8, 0, 0, 0, 0, 0, 0)),
    ((3, 3, 3, 1, 0, 0, 0, 0, 0, 0), "probability", (1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0)),
    # The tie reaches "unknown": it stays out, and 4 of 8 votes is not more than half.
    ((4, 0, 0, 0, 0, 0, 0, 0, 4, 0), "crossentropy", None),
    ((5, 3, 2, 0, 0, 0, 0, 0, 0, 0), "multi_target", (0.5, 0.5, 0, 0, 0, 0, 0, 0)),
    ((2, 2, 2, 2, 2, 0, 0, 0, 0, 0), "multi_target", None),  # no emotion has 30%
  ],
)
def test_ferplus_vote_rules(votes, mode, expected):
  targets, keep = ferplus.vote_targets(np.array([votes]), mode)
  if expected is None:
    assert not keep[0] and not targets[0].any()
  else:
    assert keep[0]
    np.testing.assert_allclose(targets[0], expected, atol=1e-6)


FER_ROWS = [  # Usage, name, 10 votes
  ("Training", "fer0000000.png", (8, 2, 0, 0, 0, 0, 0, 0, 0, 0)),  # neutral
  ("Training", "fer0000001.png", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)),  # happiness
  ("Training", "", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)),  # no name: not in FERPlus
  ("Training", "fer0000003.png", (0, 0, 0, 0, 0, 0, 0, 9, 1, 0)),  # contempt
  ("Training", "fer0000004.png", (5, 5, 0, 0, 0, 0, 0, 0, 0, 0)),  # tie: majority drops it
  ("PublicTest", "fer0000005.png", (0, 0, 7, 3, 0, 0, 0, 0, 0, 0)),  # surprise
  ("PrivateTest", "fer0000006.png", (0, 0, 0, 0, 9, 1, 0, 0, 0, 0)),  # anger
  ("PrivateTest", "fer0000007.png", (0, 0, 0, 0, 0, 0, 0, 10, 0, 0)),  # contempt
]


def make_ferplus(root, rows=FER_ROWS):
  root.mkdir(parents=True)
  with open(root / ferplus.PIXELS_FILE, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["emotion", "pixels", "Usage"])
    for i, (usage, _, _) in enumerate(rows):
      w.writerow([0, " ".join(str((i * 31 + j) % 256) for j in range(48 * 48)), usage])
  with open(root / ferplus.VOTES_FILE, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["Usage", "Image name", *ferplus.VOTE_COLUMNS])
    for usage, name, votes in rows:
      w.writerow([usage, name, *votes])


def test_ferplus_splits_classes_and_pixels(tmp_path):
  make_ferplus(tmp_path / "fer")
  config = sources.default_config("ferplus", data_dir=str(tmp_path / "fer"),
                                  prepared_dir=str(tmp_path / "prepared"))
  seven = sources.load(config)
  assert seven.class_names == expressions.FERPLUS[:7]
  assert seven.train.names == ("fer0000000.png", "fer0000001.png")  # contempt and tie dropped
  np.testing.assert_array_equal(seven.train.labels, [0, 1])
  assert seven.test.names == ("fer0000006.png",) and seven.test.labels.tolist() == [4]
  image = seven.train[1]["image"]  # grey, replicated to 3 channels, lossless
  assert image.shape == (48, 48, 3)
  np.testing.assert_array_equal(image[..., 0].ravel(), [(31 + j) % 256 for j in range(48 * 48)])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  config.num_classes, config.train_split = 8, "train+validation"
  eight = sources.load(config)
  assert eight.train.names == ("fer0000000.png", "fer0000001.png", "fer0000003.png",
                               "fer0000005.png")
  np.testing.assert_array_equal(eight.train.labels, [0, 1, 7, 2])
  np.testing.assert_array_equal(eight.train[3]["image"][0, :3, 0], [(5 * 31 + j) for j in range(3)])
  assert eight.test.labels.tolist() == [4, 7]
  config.label_mode = "crossentropy"
  soft = sources.load(config)
  assert "fer0000004.png" in soft.train.names  # a 5/5 tie is a valid distribution
  np.testing.assert_allclose(soft.train[soft.train.names.index("fer0000004.png")]["soft_label"],
                             [0.5, 0.5, 0, 0, 0, 0, 0, 0])
  assert soft.test.soft_labels is None  # test labels are always the majority


def test_ferplus_bad_rows(tmp_path):
  rows = list(FER_ROWS)
  rows[5] = ("PrivateTest", *rows[5][1:])
  make_ferplus(tmp_path / "a", rows)
  text = (tmp_path / "a" / ferplus.PIXELS_FILE).read_text().replace("PrivateTest", "PublicTest", 1)
  (tmp_path / "a" / ferplus.PIXELS_FILE).write_text(text)
  config = sources.default_config("ferplus", data_dir=str(tmp_path / "a"),
                                  prepared_dir=str(tmp_path / "p"))
  with pytest.raises(prepared.DataError, match="fer2013new.csv, line 7: Usage 'PrivateTest' but "
                     "'PublicTest'"):
    sources.load(config)
  make_ferplus(tmp_path / "b")
  path = tmp_path / "b" / ferplus.PIXELS_FILE
  lines = path.read_text().splitlines()
  lines[2] = lines[2].replace(',31 32 ', ',31 ', 1)  # 2303 values
  path.write_text("\n".join(lines) + "\n")
  config.data_dir = str(tmp_path / "b")
  with pytest.raises(prepared.DataError, match="fer2013.csv, line 3: expected 2304 pixel values"):
    sources.load(config)


def make_affectnet(root):
  """Manual lists (training with a header, validation without, as released) and images."""
  header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
            "facial_landmarks", "expression", "valence", "arousal"]
  marks = ";".join(f"{10 + k % 20}.5;{12 + k // 20}.0" for k in range(68))
  rows = {"training": [], "validation": []}
  for i, code in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 7, 9, 1]):
    split = "validation" if i % 4 == 3 else "training"
    path = f"{i % 2}/img{i}.jpg"
    _save(root / "Manually_Annotated_Images" / path, np.full((40, 30, 3), 20 * i, np.uint8))
    rows[split].append([path, 5, 6, 20, 25, marks, code, 0.1, -0.2])
  lists = root / "Manually_Annotated_file_lists"
  lists.mkdir(parents=True)
  for split, body in rows.items():
    with open(lists / f"{split}.csv", "w", newline="") as f:
      w = csv.writer(f)
      if split == "training":
        w.writerow(header)
      w.writerows(body)
  return rows


def test_affectnet_crops_protocols_and_balanced_sampler(tmp_path):
  rows = make_affectnet(tmp_path / "an")
  config = sources.default_config("affectnet", data_dir=str(tmp_path / "an"),
                                  prepared_dir=str(tmp_path / "prepared"))
  seven = sources.load(config)
  assert seven.class_names == expressions.AFFECTNET[:7]
  train_codes = [r[6] for r in rows["training"]]
  assert list(seven.train.labels) == [c for c in train_codes if c < 7]
  record = seven.train[0]
  assert record["image"].shape == (25, 20, 3)  # the face box, not the 40x30 image
  assert abs(float(record["image"].mean()) - 0) < 3
  config.num_classes = 8
  eight = sources.load(config)
  assert list(eight.train.labels) == [c for c in train_codes if c < 8]  # code 9 never kept
  assert list(eight.test.labels) == [r[6] for r in rows["validation"] if r[6] < 8]
  assert eight.test.names[0] == "1/img3.jpg"
  # The automatically annotated subset is the split train_auto (real label noise).
  auto = tmp_path / "an2"
  make_affectnet(auto)
  (auto / "Automatically_annotated_file_list").mkdir()
  lines = (auto / "Manually_Annotated_file_lists/training.csv").read_text().splitlines()
  (auto / "Automatically_annotated_file_list/automatically_annotated.csv").write_text(
    "\n".join(lines[:4]) + "\n")
  (auto / "Manually_Annotated_Images").rename(auto / "Automatically_Annotated_Images")
  (auto / "Manually_Annotated_Images").symlink_to(auto / "Automatically_Annotated_Images")
  config.update(dict(data_dir=str(auto), train_split="train_auto"))
  assert list(sources.load(config).train.labels) == train_codes[:3]
  # Balanced sampler: over epochs, each class equally likely per draw despite imbalance.
  labels = np.array([0] * 90 + [1] * 10, np.int32)
  source = sources.LabelledSource(sources.ArrayStore(np.zeros((100, 4, 4, 3), np.uint8)),
                                  labels, tuple(map(str, range(100))))
  ds = pipeline.train_dataset(source, "", batch_size=100, seed=0, sampler="balanced")
  drawn = np.concatenate([b["label"] for b, _ in zip(iter(ds), range(20))])
  assert abs(drawn.mean() - 0.5) < 0.03
  again = next(iter(pipeline.train_dataset(source, "", batch_size=100, seed=0,
                                           sampler="balanced")))
  np.testing.assert_array_equal(again["index"], next(iter(ds))["index"])


def test_image_folders_and_csv_lists(tmp_path):
  root = tmp_path / "mine"
  for split, names in (("train", ("sad", "happy", "happy")), ("test", ("happy", "sad"))):
    for i, name in enumerate(names):
      _save(root / split / name / f"{i}.png", _image(i), "PNG")
  config = sources.default_config("folder", data_dir=str(root),
                                  prepared_dir=str(tmp_path / "prepared"))
  dataset = sources.load(config)
  assert dataset.class_names == ("happy", "sad")  # sorted when not given
  assert dataset.train.names == ("train/happy/1.png", "train/happy/2.png", "train/sad/0.png")
  np.testing.assert_array_equal(dataset.train[2]["image"], _image(0))  # PNG: exact
  config.class_names = "sad,happy"
  assert sources.load(config).train.labels.tolist() == [1, 1, 0]
  config.class_names = "sad,angry"
  with pytest.raises(ValueError, match="the data has the classes"):
    sources.load(config)
  with open(root / "train.csv", "w") as f:
    f.write("path,label\ntrain/happy/1.png,happy\ntrain/sad/0.png,sad\n")
  with open(root / "test.csv", "w") as f:
    f.write("path,label\ntest/sad/1.png,sad\ntest/sad/9.png,sad\n")
  config.update(dict(format="csv", class_names=""))
  with pytest.raises(prepared.DataError, match="test.csv, line 3: expected the image .*9.png"):
    sources.load(config)
  with open(root / "test.csv", "w") as f:
    f.write("path,label\ntest/sad/1.png,sad\n")
  os.utime(root / "test.csv")
  csv_data = sources.load(config)
  assert csv_data.train.labels.tolist() == [0, 1] and len(csv_data.test) == 1
  # A class folder with no image is named, not silently a smaller dataset.
  (root / "train/fear").mkdir()
  (root / "test/fear").mkdir()
  config.format = "folders"
  with pytest.raises(prepared.DataError, match=r"train/fear: class folder with no images"):
    sources.load(config)


def test_prepared_once_then_read_from_array_record(tmp_path):
  """After preparing, runs of the unchanged copy read the ArrayRecord copy; a copy whose images
  were removed since is not read from the stale preparation."""
  make_raf(tmp_path / "raf")
  config = raf_config(tmp_path, tmp_path / "raf")
  first = sources.load(config)
  again = sources.load(config)
  assert again.source == first.source and again.train.names == first.train.names
  np.testing.assert_array_equal(again.train[5]["image"], first.train[5]["image"])
  assert len(list((tmp_path / "prepared").iterdir())) == 1  # prepared once
  (tmp_path / "raf/Image/aligned/train_00006_aligned.jpg").unlink()
  with pytest.raises(prepared.DataError, match="train_00006.*does not exist"):
    sources.load(config)


def test_affectnet_bad_rows_and_boxes_outside_the_image(tmp_path):
  make_affectnet(tmp_path / "an")
  lists = tmp_path / "an/Manually_Annotated_file_lists"
  good = (lists / "training.csv").read_text()
  config = sources.default_config("affectnet", data_dir=str(tmp_path / "an"),
                                  prepared_dir=str(tmp_path / "p1"))
  (lists / "training.csv").write_text(good.replace(",1,0.1,-0.2", ",12,0.1,-0.2", 1))
  with pytest.raises(prepared.DataError, match="training.csv, line 3: expression 12: expected 0..10"):
    sources.load(config)
  lines = good.splitlines()
  lines[1] = lines[1].replace(";", ",", 1)  # a broken landmark field shifts the columns
  (lists / "training.csv").write_text("\n".join(lines) + "\n")
  config.prepared_dir = str(tmp_path / "p2")
  with pytest.raises(prepared.DataError, match="training.csv, line 2: "):
    sources.load(config)
  lines = good.splitlines()
  lines[1] = lines[1].replace("0/img0.jpg,5,6,", "0/img0.jpg,500,600,", 1)
  (lists / "training.csv").write_text("\n".join(lines) + "\n")
  config.update(dict(prepared_dir=str(tmp_path / "p3"), corrupt_images="skip"))
  dataset = sources.load(config)
  assert "0/img0.jpg" not in dataset.train.names and "0/img4.jpg" in dataset.train.names


def test_folder_test_class_unknown_to_train_is_named(tmp_path):
  root = tmp_path / "mine"
  _save(root / "train/happy/0.png", _image(0), "PNG")
  _save(root / "test/surprised/0.png", _image(1), "PNG")
  config = sources.default_config("folder", data_dir=str(root),
                                  prepared_dir=str(tmp_path / "prepared"))
  with pytest.raises(prepared.DataError, match="test/surprised/0.png: class 'surprised' is not "
                     "a class of the train split"):
    sources.load(config)
