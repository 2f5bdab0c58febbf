"""The demo's promise about photos without gradio: its upload folder is removed however it is
stopped (two signals in quick succession included), and the folders of demos that died
without cleaning up are removed when the next one starts."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

from fer_jax import checkpoint
from fer_jax.deploy import demo_page

ROOT = pathlib.Path(__file__).resolve().parents[1]

# demo_page.serve with the page and the model replaced: closing the page takes 0.6 s, so the
# second signal arrives while the clean-up runs.
_DEMO = textwrap.dedent("""
  import sys
  import time
  from fer_jax import cli
  from fer_jax.deploy import demo_page

  class Page:
    is_running = True
    def launch(self, **kwargs):
      return None, "http://127.0.0.1", None
    def close(self, verbose=False):
      time.sleep(0.6)

  demo_page.classifier = lambda *args: (lambda crops: None)
  demo_page.build = lambda *args: Page()
  cli.run(lambda argv: demo_page.serve(None, None, {}, "model", port=int(sys.argv[1]),
                                       ready=lambda url, public, folder: print(folder, flush=True)),
          "demo", ["demo"])
""")


def _start_demo(tmp_path, sigint=signal.SIG_DFL):
  """The stand-in demo, started with SIGINT's disposition `sigint`; it and its upload folder
  (holding an upload)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path))
  with socket.socket() as probe:  # a free port
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  demo = subprocess.Popen([sys.executable, "-c", _DEMO, str(port)], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
  folder = pathlib.Path(demo.stdout.readline().strip())
  assert folder.parent == tmp_path and folder.is_dir()
  (folder / "upload.jpg").write_bytes(b"a face")
  return demo, folder


def _stderr_when_stopped(demo):
  try:
    return demo.communicate(timeout=60)[1]
  except subprocess.TimeoutExpired:
    demo.kill()
    raise


def test_ctrl_c_stops_a_demo_started_with_sigint_ignored(tmp_path):
  """A shell without job control starts a background command with SIGINT ignored."""
  demo, folder = _start_demo(tmp_path, sigint=signal.SIG_IGN)
  demo.send_signal(signal.SIGINT)
  err = _stderr_when_stopped(demo)
  assert demo.returncode == 130 and "Traceback" not in err, err
  assert err.strip().splitlines()[-1] == "fer_jax demo: interrupted: SIGINT", err
  assert not folder.exists() and not list(tmp_path.iterdir())


def test_two_signals_in_quick_succession_leave_no_upload_and_no_traceback(tmp_path):
  demo, folder = _start_demo(tmp_path)
  demo.send_signal(signal.SIGTERM)
  time.sleep(0.2)
  demo.send_signal(signal.SIGINT)
  err = _stderr_when_stopped(demo)
  assert demo.returncode == 130, err
  assert "Traceback" not in err, err
  assert err.strip().splitlines()[-1] == "fer_jax demo: interrupted: SIGTERM", err
  assert not folder.exists() and not list(tmp_path.iterdir())


def test_uploads_of_demos_no_longer_running_are_removed_at_start(tmp_path):
  def upload_folder(name, lock):
    folder = tmp_path / (demo_page.UPLOADS_PREFIX + name)
    folder.mkdir()
    (folder / "upload.jpg").write_bytes(b"a face")
    if lock:
      (folder / demo_page.UPLOADS_LOCK).write_text("")
    return folder

  dead = upload_folder("dead", lock=True)  # its demo was killed: nobody holds the lock
  old = upload_folder("old", lock=False)  # an earlier version's, an hour old
  os.utime(old, (time.time() - 3600,) * 2)
  starting = upload_folder("starting", lock=False)  # a demo taking its lock right now
  running = upload_folder("running", lock=True)
  held = checkpoint.hold(running / demo_page.UPLOADS_LOCK)
  try:
    assert sorted(demo_page.remove_left_uploads(tmp_path)) == sorted([dead, old])
    assert running.is_dir() and starting.is_dir() and not dead.exists() and not old.exists()
  finally:
    os.close(held)
