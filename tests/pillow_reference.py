"""The references of tests/host_ops.py run under the Pillow the official code ran with.

fer_jax/data/device_ops.py resizes as Pillow 3.3 to 12.1 do: the horizontal pass first, then the
vertical, for every box. Pillow 13 runs the vertical pass first where the height shrinks much
more than the width (12.2 already did so for images over 100 times taller than wide), which
moves some pixels by one level. So the references run under `REQUIREMENT`: in the test process
when the installed Pillow satisfies it, else in a worker process that puts a copy of it, pip
installed once into ~/.cache/fer_jax/, first on its path: `python -m tests.pillow_reference`.
"""

import os
import pathlib
import pickle
import platform
import shutil
import subprocess
import sys

import PIL
import pytest

REQUIREMENT = "pillow>=7,<12.2"  # 7: BICUBIC became resize's default for RGB
ROOT = pathlib.Path(__file__).resolve().parents[1]


def in_range(version):
  major, minor = (int(x) for x in version.split(".")[:2])
  return (7, 0) <= (major, minor) < (12, 2)


class SignRng:
  """Stands in for the generator inside a RandAugment pool op: host_ops._signed negates when
  random() < 0.5."""

  def __init__(self, negate):
    self.negate = negate

  def random(self):
    return 0.25 if self.negate else 0.75


def _calls():
  from tests import host_ops  # imported in the worker under the reference Pillow

  return {
    "op": lambda name, args, kwargs, ex, rng: host_ops.OPS[name](*args, **kwargs)(ex, rng),
    "parse": lambda spec, ex, rng: host_ops.parse(spec)(ex, rng),
    "pool": lambda name, ex, key, v, rng: host_ops._RANDAUG_POOL[name](ex, key, v, rng),
    "version": lambda: PIL.__version__,
  }


class Reference:
  """host_ops' ops, applied under the reference Pillow. Each call gets a copy of `rng`."""

  def __init__(self, process=None):
    self.process = process
    self._local = None if process else _calls()

  def _call(self, name, *args):
    if self._local is not None:
      return self._local[name](*args)
    pickle.dump((name, args), self.process.stdin)
    self.process.stdin.flush()
    ok, result = pickle.load(self.process.stdout)
    if not ok:
      raise RuntimeError(f"reference {name}{args[:2]} failed under Pillow:\n{result}")
    return result

  def op(self, name, *args, **kwargs):
    """host_ops.OPS[name](*args, **kwargs) as `fn(example, rng) -> example`."""
    return lambda ex, rng: self._call("op", name, args, kwargs, ex, rng)

  def parse(self, spec):
    return lambda ex, rng: self._call("parse", spec, ex, rng)

  def pool(self, name, ex, key, magnitude, rng):
    return self._call("pool", name, ex, key, magnitude, rng)

  @property
  def version(self):
    return self._call("version")

  def close(self):
    if self.process:
      self.process.stdin.close()
      self.process.wait(timeout=30)


def _target():
  tag = f"{sys.implementation.cache_tag}-{platform.machine()}"
  return pathlib.Path("~/.cache/fer_jax/pillow_reference").expanduser() / tag


def _install(target):
  """pip installs REQUIREMENT into target once; concurrent test processes each install into their
  own directory and the first rename wins."""
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(f"{target.name}.{os.getpid()}")
  shutil.rmtree(partial, ignore_errors=True)
  done = subprocess.run(
    [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
     "--no-deps", "--only-binary=:all:", "--target", str(partial), REQUIREMENT],
    capture_output=True, text=True, timeout=600, check=False)
  if done.returncode:
    shutil.rmtree(partial, ignore_errors=True)
    return done.stderr.strip().splitlines()[-1:] or [f"pip exited {done.returncode}"]
  try:
    partial.rename(target)
  except OSError:  # another process installed it first
    shutil.rmtree(partial, ignore_errors=True)
  return None


def start():
  """A `Reference`, or pytest.skip naming what is missing."""
  if in_range(PIL.__version__):
    return Reference()
  target = _target()
  if not target.is_dir() and (error := _install(target)):
    pytest.skip(f"the exact Pillow references need {REQUIREMENT} (the Pillow the official code "
                f"ran with; {PIL.__version__} is installed), and pip could not install it into "
                f"{target}: {error[0]}")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(target), str(ROOT)] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
  process = subprocess.Popen([sys.executable, "-m", "tests.pillow_reference"], cwd=ROOT, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  ref = Reference(process)
  assert in_range(ref.version), (ref.version, target)
  return ref


def _serve():
  """The worker: answers pickled (name, args) requests on stdin until it closes."""
  requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
  sys.stdout = sys.stderr  # nothing else may write into the replies
  calls = _calls()
  while True:
    try:
      name, args = pickle.load(requests)
    except EOFError:
      return
    try:
      reply = (True, calls[name](*args))
    except Exception:  # noqa: BLE001 (sent back to the test, which raises it)
      import traceback

      reply = (False, traceback.format_exc())
    pickle.dump(reply, replies)
    replies.flush()


if __name__ == "__main__":
  _serve()
