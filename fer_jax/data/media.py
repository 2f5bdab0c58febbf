"""Photos and videos as RGB frames: listing them, reading them (photos upright, videos every Nth
frame), and drawing labelled face boxes on them.

  for path in list_files(["party/", "clip.mp4"], IMAGE_SUFFIXES + VIDEO_SUFFIXES):
    for frame, image in read_frames(path, stride=5):   # frame: None for a photo
      ...

Frames are (H, W, 3) uint8 RGB arrays. Videos are decoded by OpenCV (`cv2.VideoCapture`, from
the opencv-python-headless wheel); photos by PIL, turned upright as their EXIF orientation says
(phones store them sideways). Nothing here imports jax.
"""

import contextlib
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from fer_jax import cli

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Box and label colours, one per class (matplotlib's tab10): classes stay apart on any photo.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def is_video(path):
  return pathlib.Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_files(paths, suffixes, kind="images"):
  """Expands directories (recursively, sorted) into files with one of `suffixes`; files are
  kept as given.

  Raises:
    FileNotFoundError: naming a path that does not exist.
    cli.UsageError: when there is no file at all (an empty result would write an empty
      table, or nothing, and look like success).
  """
  out = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      out += sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file())
    elif p.exists():
      out.append(p)
    else:
      raise FileNotFoundError(f"{p}: no such file or directory")
  if not out:
    raise cli.UsageError(f"no {kind} in {', '.join(map(str, paths))}: expected files "
                         f"({', '.join(suffixes)}) or directories holding them")
  return out


def read_photo(path):
  """The RGB pixels of an image file, upright as its EXIF orientation says (16-bit greyscale
  scaled to 8 bits, not clipped; a GIF's first frame). Training's folder datasets read images
  with it too (data/prepared.py)."""
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode.startswith("I"):  # 16-bit greyscale: convert("RGB") would clip at 255
        image = Image.fromarray((np.asarray(image, np.uint32) >> 8).astype(np.uint8))
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise cli.UsageError(f"{path}: unreadable image ({e}); expected a JPEG/PNG/BMP/WebP "
                         "file") from e


FACES_INSTALL = 'pip install -e ".[faces]"'


def missing(package, error=None):
  """The UsageError for an absent optional dependency: names the extra that installs it."""
  detail = f" ({error})" if error else ""
  return cli.UsageError(f"{package} is not installed{detail}: faces need the `faces` extra, "
                        f"{FACES_INSTALL}")


def _cv2():
  # FFmpeg prints its own complaints about a broken file; the error raised here names it.
  os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
  try:
    import cv2  # optional: the faces extra
  except ImportError as e:
    raise missing("opencv-python-headless", e) from e
  return cv2


def _unreadable_video(path, detail):
  return cli.UsageError(f"{path}: unreadable video ({detail}); expected a video OpenCV decodes "
                        f"({' '.join(VIDEO_SUFFIXES)})")


def video_frames(path, stride=1):
  """Yields (frame index, RGB frame) for frames 0, stride, 2 * stride, ... of a video.

  Raises:
    cli.UsageError: naming the video when OpenCV cannot open it or decode its first frame.
  """
  if stride < 1:
    raise ValueError(f"stride={stride}: expected a positive number of frames")
  cv2 = _cv2()
  capture = cv2.VideoCapture(str(path))
  try:
    if not capture.isOpened():
      raise _unreadable_video(path, "OpenCV cannot open it")
    index = 0
    while capture.grab():  # grab without decoding: skipped frames cost little
      if index % stride == 0:
        ok, frame = capture.retrieve()
        if not ok:
          if index == 0:
            raise _unreadable_video(path, "its first frame does not decode")
          return
        yield index, np.ascontiguousarray(frame[..., ::-1])  # BGR -> RGB
      index += 1
    if index == 0:
      raise _unreadable_video(path, "no frame decodes")
  finally:
    capture.release()


def check_video(path):
  """Raises the error of `video_frames` for a video that does not open or decode (cheap: one
  frame), so that a command refuses it before loading a model."""
  with contextlib.closing(video_frames(path)) as frames:
    next(frames, None)


def read_frames(path, stride=1):
  """Yields (frame, RGB image): (None, the photo) for an image file, (index, frame) for every
  `stride`-th frame of a video."""
  if is_video(path):
    yield from video_frames(path, stride)
  else:
    yield None, read_photo(path)


def output_stems(paths):
  """A distinct relative stem per input path (its folders below the inputs' common folder, its
  name without suffix), for files written per input; inputs that share one keep their suffix,
  then a counter."""
  resolved = [pathlib.Path(p).resolve() for p in paths]
  root = pathlib.Path(os.path.commonpath([p.parent for p in resolved]))
  stems = [p.relative_to(root).with_suffix("") for p in resolved]
  counts = {s: stems.count(s) for s in stems}
  stems = [s if counts[s] == 1 else s.with_name(f"{s.name}_{p.suffix.lower()[1:]}")
           for s, p in zip(stems, resolved)]
  seen, out = {}, []
  for s in stems:
    seen[s] = seen.get(s, 0) + 1
    out.append(s if seen[s] == 1 else s.with_name(f"{s.name}_{seen[s]}"))
  return out


def _font(size):
  try:
    return ImageFont.load_default(size=size)
  except (OSError, ImportError):  # a PIL without FreeType has only its small bitmap font
    return ImageFont.load_default()


def draw_boxes(image, labels):
  """A copy of `image` with a box and a text over it for each (box (x, y, w, h), text,
  colour index) of `labels`; line and text scale with the image."""
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  side = max(image.shape[:2])
  width = max(2, round(side / 300))
  font = _font(max(12, round(side / 40)))
  for (x, y, w, h), text, colour in labels:
    colour = PALETTE[colour % len(PALETTE)]
    draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    # Above the box, or inside its top when the box touches the image's top.
    ty = y - (bottom - top) - 2 * width
    tx, ty = x, ty if ty >= 0 else y
    draw.rectangle([tx, ty, tx + right - left + 2 * width, ty + bottom - top + 2 * width],
                   fill=colour)
    draw.text((tx + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
  return np.asarray(canvas)
