"""scripts/benchmark_gpu.sh's smoke mode (SMOKE=1) on the CPU: every step of the prepared GPU run
executes and writes its rows, the official-code rows against tests/official_standin/.

The whole smoke run starts about 30 fer_jax and PyTorch processes (6 to 10 minutes on 2 cores),
so it runs where FER_JAX_GPU_SMOKE=1 is set (before a GPU is lent) and is skipped otherwise; its
official-code rows alone run in every test session."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "official_standin"



def _env(tmp_path, **extra):
  """The environment with stand-ins for torchvision and pandas where they are not installed."""
  site = tmp_path / "site"
  site.mkdir()
  for name in ("torchvision", "pandas"):
    if importlib.util.find_spec(name) is None:
      (site / name).symlink_to(STANDIN / "site" / name)
  path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
  return {**os.environ, "PYTHONPATH": path, **extra}


def test_official_rows_run_against_the_stand_ins(tmp_path):
  """The smoke run's official-code step: benchmark_torch.py's five builders, step only, and
  end to end from their main()'s DataLoader (the stand-ins follow the script's calls)."""
  pytest.importorskip("torch")
  pytest.importorskip("cv2")
  from fer_jax.data import synthetic

  raf = tmp_path / "raf"
  synthetic.write_raf_db(raf, num_train=8, num_test=2, size=32, workers=1)
  env = _env(tmp_path)
  common = [sys.executable, "scripts/benchmark_torch.py", "--official_dir", str(STANDIN),
            "--image_size", "224", "--batch_size", "2", "--steps", "1", "--warmup", "1",
            "--commit", "smoke"]
  rows = []
  for extra in (["--methods", "ce,eac_r18,ncct,ce_caffe50,eac"],
                ["--methods", "eac_r18", "--end_to_end", "--raf_path", str(raf), "--workers", "0"]):
    run = subprocess.run(common + extra, check=False, cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows += [line for line in run.stdout.splitlines() if line.startswith("| 20")]
  assert len(rows) == 6
  assert "their DataLoader, 0 workers (EAC RafDataset, noise01.txt, 8 imgs)" in rows[-1]


@pytest.mark.skipif(os.environ.get("FER_JAX_GPU_SMOKE") != "1",
                    reason="6 to 10 minutes: set FER_JAX_GPU_SMOKE=1 to run it")
@pytest.mark.timeout(1800)
def test_smoke_run_executes_every_step(tmp_path):
  pytest.importorskip("torch")
  out = tmp_path / "out"
  env = _env(tmp_path, SMOKE="1", OUT=str(out), OFFICIAL=str(STANDIN), PYTHON=sys.executable,
             COMMIT="smoke")
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
