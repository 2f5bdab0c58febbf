"""scripts/benchmark_gpu.sh's smoke mode (SMOKE=1) on the CPU: every step of the prepared GPU run
executes and writes its rows, the official-code rows against tests/official_standin/.

It runs about 30 fer_jax and PyTorch processes (6 to 10 minutes on 2 cores), so it runs where
FER_JAX_GPU_SMOKE=1 is set (before a GPU is lent, and in CI's step for it) and is skipped
otherwise."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "official_standin"

pytestmark = pytest.mark.skipif(os.environ.get("FER_JAX_GPU_SMOKE") != "1",
                                reason="several minutes: set FER_JAX_GPU_SMOKE=1 to run it")


@pytest.mark.timeout(1800)
def test_smoke_run_executes_every_step(tmp_path):
  pytest.importorskip("torch")
  site = tmp_path / "site"  # stand-ins only for what is not installed
  site.mkdir()
  for name in ("torchvision", "pandas"):
    if importlib.util.find_spec(name) is None:
      (site / name).symlink_to(STANDIN / "site" / name)
  out = tmp_path / "out"
  env = {**os.environ, "SMOKE": "1", "OUT": str(out), "OFFICIAL": str(STANDIN),
         "PYTHON": sys.executable, "COMMIT": "smoke",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
  run = subprocess.run(["bash", "scripts/benchmark_gpu.sh"], check=False, cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1500)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  check_outputs(out)


def check_outputs(out):
  """Every step's rows in $OUT/rows.md, the grid tables of both dtypes."""
  rows = (out / "rows.md").read_text()
  configs = [line.split(" | ")[3] for line in rows.splitlines() if line.startswith("| 20")]
  for row in ("eac resnet18 w8 32px float32", "ce resnet18", "ncct resnet18",
              "scn resnet18", "rul resnet18", "lanet resnet18"):
    assert any(c.startswith(row) for c in configs), (row, configs)
  assert len([c for c in configs if "PyTorch" not in c]) == 9  # EAC x2, 5 methods, 2 float32
  official = [c for c in configs if "PyTorch" in c]
  assert len(official) == 6, official
  assert "60-epoch EAC run:" in rows and "final accuracy" in rows
  for dtype in ("bfloat16", "float32"):
    table = (out / f"grid_{dtype}" / "results.md").read_text()
    for method in ("ce", "eac", "ncct", "scn"):
      assert f"| {method} | synthetic |" in table, (dtype, method)
