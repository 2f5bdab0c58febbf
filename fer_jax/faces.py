r"""`python -m fer_jax.faces`: aligned face crops from raw photos, and LA-Net landmark files for
any dataset. The library behind it is fer_jax/inference/face_data.py and faces.py; both need
`pip install -e ".[faces]"`.

  python -m fer_jax.faces align --input RAW_DIR --output ALIGNED_DIR [--size 100] \
      [--margin 0] [--min_face_size 20] [--score_threshold 0.9] [--largest_only]
  python -m fer_jax.faces landmarks --config configs/lanet.py:folder \
      --config.dataset.data_dir=ALIGNED_DIR --out train_landmarks.npy

align: every image under --input (any depth; .jpg .jpeg .png .bmp .webp, EXIF-rotated upright)
gives one crop per face, `<output>/<relative folder>/<stem>_face<k>.png` (k = 0 the largest), so a
`train/<class>/...` tree becomes a `folder` dataset, as the papers made theirs (MTCNN, then a
5-point similarity onto RAF-DB's framing). `<output>/faces.csv` lists every image: its faces'
boxes, scores and five points, or status no_face / unreadable. --output must not exist.

landmarks: the (N, 19, 2) file that `config.dataset.train_landmarks` takes (fer_jax/data/
landmark_files.py): per training image, in the order of the training list, the 19 AFLW points
in pixels of the image resized to 224 px, mapped from dlib's 68 points. The face box is dlib's
own detector's, else one placed by MTCNN's five points, else (no face found) the box dlib's
detector gives on an RAF-DB-style crop; `<out stem>.csv` says which for each image.
dlib's 68-point model was trained on iBUG 300-W, licensed for research use only: the
landmarks it makes are for research, not commercial use.
"""

import pathlib

from absl import flags

from fer_jax import cli
from fer_jax.inference import face_data, faces

COMMANDS = ("align", "landmarks")


def main(argv):
  f = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    given = f"{argv[1:]}" if len(argv) > 1 else "none"
    raise cli.UsageError(f"expected one command, {' or '.join(COMMANDS)}; got {given}")
  if argv[1] == "align":
    for name in ("input", "output"):
      if not getattr(f, name):
        raise cli.UsageError(f"align needs --{name}")
    if f.size < 8 or f.min_face_size < 1:
      raise cli.UsageError(f"--size={f.size}, --min_face_size={f.min_face_size}: expected a "
                           "size of at least 8 px and a positive minimum face size")
    counts = face_data.align_folder(f.input, f.output, f.size, f.margin, f.min_face_size,
                                    f.score_threshold, f.largest_only)
    print(f"{counts['images']} images: {counts['faces']} faces in {counts['with_faces']}, "
          f"{counts['no_face']} with no face, {counts['unreadable']} unreadable (listed in "
          f"{face_data.CSV_NAME}); wrote {f.output}")
    return
  if f.config is None or not f.out:
    raise cli.UsageError("landmarks needs --config (naming the dataset) and --out FILE.npy")
  counts = face_data.write_landmarks(f.config, f.out)
  print(f"{sum(counts.values())} images: boxes from dlib's detector {counts['dlib']}, from "
        f"MTCNN {counts['mtcnn']}, none found (whole image) {counts['whole_image']}; wrote "
        f"{f.out} and {pathlib.Path(f.out).with_suffix('.csv')} ({faces.LANDMARK_MODEL_NOTE})")


if __name__ == "__main__":
  from ml_collections import config_flags

  flags.DEFINE_string("input", "", "align: folder of raw photos (searched at any depth).")
  flags.DEFINE_string("output", "", "align: folder to create for the crops and faces.csv.")
  flags.DEFINE_integer("size", 100, "align: crop side in pixels (RAF-DB's aligned: 100).")
  flags.DEFINE_float("margin", 0.0, "align: extra border per side, a fraction of RAF-DB's "
                     "framing (0: RAF-DB's; 0.25: 1.5x as wide).")
  flags.DEFINE_integer("min_face_size", 20, "align: smallest face (box side, px) detected.")
  flags.DEFINE_float("score_threshold", 0.9, "align: smallest MTCNN score kept.")
  flags.DEFINE_bool("largest_only", False, "align: crop only the largest face of each image.")
  config_flags.DEFINE_config_file("config", None, "landmarks: config[:arg] naming the dataset, "
                                  "e.g. configs/lanet.py:folder.", lock_config=False)
  flags.DEFINE_string("out", "", "landmarks: .npy file to write (never overwritten). Uses "
                      "dlib's 68-point model: trained on iBUG 300-W, research use only.")
  cli.run(main)
