"""Data as users have it: damaged prepared copies are made again from the sources (never read
half), and a folder of photos from many cameras trains as predict reads them, with the model
following the class folders."""

import io
import json
import logging
import pathlib

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from configs import baseline
from fer_jax import train
from fer_jax.data import feed, media, sources, synthetic

_ORIENTATION = 0x0112


def _pixels(seed, side=16):
  return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _rotated_jpeg(path, pixels):
  """A phone's JPEG: stored sideways, with EXIF orientation 6 (rotate 90° clockwise to view).
  Returns the upright pixels as Pillow decodes them."""
  image = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)  # sideways on disk
  exif = Image.Exif()
  exif[_ORIENTATION] = 6
  image.save(path, "JPEG", exif=exif, quality=100)
  with Image.open(path) as f:
    return np.asarray(f.convert("RGB").transpose(Image.Transpose.ROTATE_270))


# name -> writes the image at a path, returns the RGB pixels it must read as (Pillow decodes).
def _rgba_png(path):
  rgba = np.dstack([_pixels(1), np.linspace(0, 255, 256).reshape(16, 16).astype(np.uint8)])
  Image.fromarray(rgba, "RGBA").save(path)
  return rgba[..., :3]


def _palette_png(path, fmt="PNG"):
  image = Image.fromarray(_pixels(2)).quantize(16)
  image.save(path, fmt)
  return np.asarray(image.convert("RGB"))


def _greyscale_jpeg(path):
  Image.fromarray(_pixels(3)[..., 0], "L").save(path, "JPEG")
  with Image.open(path) as f:
    return np.repeat(np.asarray(f)[..., None], 3, -1)


def _cmyk_jpeg(path):
  Image.fromarray(_pixels(4)).convert("CMYK").save(path, "JPEG", quality=100)
  with Image.open(path) as f:
    assert f.mode == "CMYK"
    return np.asarray(f.convert("RGB"))


def _png16(path):
  grey = (np.arange(256).reshape(16, 16) * 257).astype(np.uint16)  # 0..65535
  Image.fromarray(grey).save(path)
  return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, -1)  # not clipped to white


ODD_IMAGES = {
  "rgba png": ("a", "with alpha.png", _rgba_png),
  "palette png": ("a", "palette.png", _palette_png),
  "palette gif": ("b", "animé.gif", lambda p: _palette_png(p, "GIF")),
  "greyscale jpeg": ("b", "grey scale.jpg", _greyscale_jpeg),
  "cmyk jpeg": ("c", "cmyk.jpg", _cmyk_jpeg),
  "16-bit png": ("c", "16 bit.png", _png16),
  "exif-rotated jpeg": ("c", "téléphone photo.jpg", lambda p: _rotated_jpeg(p, _pixels(5))),
}


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
  """A folder dataset of 3 classes (folder names with a space and a non-ASCII letter) holding
  every kind of ODD_IMAGES in both splits; returns (config block, {kind: expected pixels})."""
  root = tmp_path_factory.mktemp("odd") / "photos"
  expected = {}
  for split in ("train", "test"):
    for kind, (folder, name, write) in ODD_IMAGES.items():
      directory = root / split / {"a": "class a", "b": "clásico", "c": "c"}[folder]
      directory.mkdir(parents=True, exist_ok=True)
      expected[kind] = write(directory / name)
  config = sources.default_config("folder", data_dir=str(root),
                                  prepared_dir=str(root.parent / "prepared"))
  return config, expected


def _record(dataset, split, kind):
  folder, name, _ = ODD_IMAGES[kind]
  names = list(getattr(dataset, split).names)
  match = [i for i, n in enumerate(names) if n.endswith("/" + name)]
  return match[0]


@pytest.mark.parametrize("kind", list(ODD_IMAGES))
def test_every_camera_image_trains_as_predict_reads_it(odd_folder, kind):
  config, expected = odd_folder
  dataset = sources.load(config)
  index = _record(dataset, "train", kind)
  stored = dataset.train[index]["image"]
  path = config.data_dir + "/" + dataset.train.names[index]
  np.testing.assert_array_equal(media.read_photo(path), expected[kind])  # predict's reading
  if kind == "cmyk jpeg":  # Pillow decodes it through its own conversion; PNG keeps it exact
    assert np.abs(stored.astype(int) - expected[kind]).max() <= 1
  else:
    np.testing.assert_array_equal(stored, expected[kind])


def test_both_input_placements_read_the_same_pixels(odd_folder):
  config, _ = odd_folder
  dataset = sources.load(config)
  run = baseline.get_config("folder,runlocal=true")
  sharding = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("data",)), P("data"))
  batches = {}
  for placement in ("device", "host"):
    run.input.placement = placement
    inputs = feed.Feed(dataset, run.input, sharding, progress=False)
    batches[placement] = np.asarray(next(inputs.eval_batches(8))["image"])
  np.testing.assert_array_equal(batches["device"], batches["host"])


def test_the_model_follows_the_class_folders(odd_folder, tmp_path):
  config, _ = odd_folder
  run = baseline.get_config("folder,runlocal=true")
  assert run.model.num_classes == 0  # not given: counted from the folders
  run.dataset.update({k: config[k] for k in ("data_dir", "prepared_dir")})
  run.update(dict(num_epochs=1, progress_bar=False, batch_size=4, eval_batch_size=4))
  summary = train.train_and_evaluate(run, tmp_path / "run")
  assert summary["class_names"] == ["c", "class a", "clásico"]
  saved = json.loads((tmp_path / "run/config.json").read_text())
  assert saved["model"]["num_classes"] == 3
  assert json.loads((tmp_path / "run/model/model.json").read_text())["num_classes"] == 3
  run.model.num_classes = 0
  train.train_and_evaluate(run, tmp_path / "run")  # the same command: nothing to resume
  run.model.num_classes = 7  # given: checked, as before
  with pytest.raises(ValueError, match="config.model.num_classes=7 but dataset 'folder' has 3"):
    train.train_and_evaluate(run, tmp_path / "other")


def _copy_files(config):
  """The files of the prepared copy by their path below its builder folder (two are named
  metadata.json: TFDS's `.config/` one and the version's)."""
  builder = next(pathlib.Path(config.prepared_dir).iterdir()) / "fer_jax_folder"
  return {str(p.relative_to(builder)): p for p in builder.rglob("*")
          if p.is_file() and "incomplete" not in str(p)}


@pytest.mark.parametrize("damaged", [
  "folders/1.0.0/fer_jax_folder-train.array_record-00000-of-00001",
  "folders/1.0.0/dataset_info.json", "folders/1.0.0/metadata.json", ".config/metadata.json"])
def test_a_damaged_prepared_copy_is_prepared_again_with_a_warning(odd_folder, tmp_path, caplog,
                                                                  damaged):
  config, _ = odd_folder
  config = config.copy_and_resolve_references()
  config.prepared_dir = str(tmp_path / "prepared")
  first = sources.load(config)
  path = _copy_files(config)[damaged]
  size = path.stat().st_size
  path.write_bytes(path.read_bytes()[: size // 3])  # as a disk that filled up mid-write leaves it
  with caplog.at_level(logging.WARNING):
    again = sources.load(config)
  warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(str(path) in m and "preparing it again" in m for m in warning), warning
  for i in range(len(first.train)):
    np.testing.assert_array_equal(again.train[i]["image"], first.train[i]["image"])
  assert _copy_files(config)[damaged].stat().st_size == size  # whole again


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a zip"])
def test_a_damaged_synthetic_cache_is_made_again_with_a_warning(tmp_path, caplog, damage):
  config = sources.default_config("synthetic", num_train=20, num_test=6, image_size=16,
                                  cache_dir=str(tmp_path))
  first = synthetic.load(config)
  cache = pathlib.Path(first.source)
  data = cache.read_bytes()
  cache.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                     "not a zip": b"<html>" + data[6:]}[damage])
  with caplog.at_level(logging.WARNING):
    again = synthetic.load(config)
  assert any(str(cache) in r.getMessage() and "making it again" in r.getMessage()
             for r in caplog.records)
  np.testing.assert_array_equal(again.train.store.images, first.train.store.images)
  np.testing.assert_array_equal(again.test.labels, first.test.labels)
  with np.load(io.BytesIO(cache.read_bytes())) as f:  # the cache itself is whole again
    assert f["train_images"].shape == (20, 16, 16, 3)
