r"""Input-side costs of a prepared dataset: preparation once, then reading per epoch.

  python scripts/benchmark_data.py [--data_dir ~/data/raf-basic] [--num_images 3000]

Without --data_dir, writes a RAF-DB-layout tree of synthetic 100x100 JPEG faces first (the
size of RAF-DB's aligned images). Reports: preparation time (label parsing, decode check,
ArrayRecord writing), records/s read back (JPEG decode included), and images/s of the train
pipeline (decoding only, as the host path does; batch 32) against decoding the JPEG files straight
from disk with the same ops.
"""

import pathlib
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

flags.DEFINE_string("data_dir", "", "A RAF-DB copy; empty: a synthetic one in a temp dir.")
flags.DEFINE_integer("num_images", 3000, "Synthetic images to write without --data_dir.")
flags.DEFINE_integer("batches", 30, "Pipeline batches of 32 to time.")

OPS = ""  # the host path decodes only; augmentation runs in the train step on the devices


class _FileSource:
  """The alternative without a prepared copy: decode each JPEG file on every read."""

  def __init__(self, root, names):
    self.paths = [root / "Image/aligned" / f"{n.split('.')[0]}_aligned.jpg" for n in names]

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    return {"image": np.asarray(Image.open(self.paths[i]).convert("RGB")),
            "label": np.int32(0), "index": np.int32(i)}


def _images_per_second(source, batches):
  from fer_jax.data import pipeline

  it = iter(pipeline.train_dataset(source, OPS, batch_size=32, seed=0))
  next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return 32 * batches / (time.perf_counter() - start)


def main(argv):
  del argv
  from fer_jax.data import sources, synthetic

  tmp = pathlib.Path(tempfile.mkdtemp())
  root = pathlib.Path(flags.FLAGS.data_dir).expanduser() if flags.FLAGS.data_dir else tmp / "raf"
  if not flags.FLAGS.data_dir:
    synthetic.write_raf_db(root, flags.FLAGS.num_images, 10)
  config = sources.default_config("raf_db", data_dir=str(root), prepared_dir=str(tmp / "prep"))
  start = time.perf_counter()
  dataset = sources.load(config)
  prepare_s = time.perf_counter() - start
  n = min(len(dataset.train), 2000)
  start = time.perf_counter()
  for i in range(n):
    dataset.train[i]
  read = n / (time.perf_counter() - start)
  prepared_rate = _images_per_second(dataset.train, flags.FLAGS.batches)
  files_rate = _images_per_second(_FileSource(root, dataset.train.names), flags.FLAGS.batches)
  size_mb = sum(p.stat().st_size for p in (tmp / "prep").rglob("*.array_record*")) / 2**20
  print(f"{len(dataset.train)} train images: prepare {prepare_s:.1f} s "
        f"({len(dataset.train) / prepare_s:.0f} img/s, {size_mb:.1f} MiB ArrayRecord); "
        f"read back {read:.0f} records/s (one thread); train pipeline {prepared_rate:.0f} img/s "
        f"from ArrayRecord vs {files_rate:.0f} img/s from JPEG files")


if __name__ == "__main__":
  app.run(main)
