"""Results tables: grouping by method and noise, mean ± std over seeds; the command."""

import json
import pathlib
import subprocess
import sys

from fer_jax.experiments import workdirs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(path, method, seed, rate, final, best, last5, kind="symmetric", dataset="synthetic"):
  path.mkdir(parents=True)
  kind = kind if rate else "none"
  (path / "config.json").write_text(json.dumps({
    "method": method, "seed": seed, "dataset": {"name": dataset},
    "noise": {"kind": kind, "rate": rate, "file": ""}}))
  (path / "summary.json").write_text(json.dumps({
    "final_accuracy": final, "best_accuracy": best, "mean_last5_accuracy": last5}))
  return path


def test_table_groups_runs_and_reports_mean_and_std(tmp_path):
  dirs = [_run(tmp_path / "a", "ce", 0, 0.3, 0.60, 0.70, 0.65),
          _run(tmp_path / "b", "ce", 1, 0.3, 0.70, 0.80, 0.75),
          _run(tmp_path / "c", "eac", 0, 0.3, 0.90, 0.90, 0.90),
          _run(tmp_path / "d", "ce", 0, 0.0, 0.95, 0.96, 0.94)]
  (tmp_path / "unfinished").mkdir()
  lines = workdirs.table(workdirs.load_runs([*dirs, tmp_path / "unfinished"])).splitlines()
  assert len(lines) == 5
  assert "| ce | synthetic | symmetric 0.3 | 0,1 | 65.00 ± 5.00 | 75.00 ± 5.00 | 70.00 ± 5.00 |" in lines
  assert "| eac | synthetic | symmetric 0.3 | 0 | 90.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 |" in lines
  assert any(line.startswith("| ce | synthetic | clean | 0 |") for line in lines)


def test_noise_columns_side_by_side_with_margins_over_the_reference(tmp_path):
  runs = workdirs.load_runs([
    _run(tmp_path / "a", "ce", 0, 0.3, 0.60, 0.70, 0.65),
    _run(tmp_path / "b", "ce", 1, 0.3, 0.70, 0.80, 0.75),
    _run(tmp_path / "c", "eac", 0, 0.3, 0.90, 0.91, 0.90),
    _run(tmp_path / "d", "ce", 0, 0.3, 0.80, 0.85, 0.80, kind="instance"),
    _run(tmp_path / "e", "eac", 0, 0.3, 0.75, 0.76, 0.75, kind="instance"),
    _run(tmp_path / "f", "lanet", 0, 0.3, 0.88, 0.89, 0.88),
    _run(tmp_path / "g", "ce", 0, 0.3, 0.50, 0.55, 0.50, dataset="raf_db"),
    _run(tmp_path / "h", "eac", 0, 0.3, 0.60, 0.62, 0.60, dataset="raf_db")])
  assert workdirs.noise_columns(runs).splitlines() == [
    "| method | dataset | seeds | symmetric 0.3 final | symmetric 0.3 best | instance 0.3 final "
    "| instance 0.3 best |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    "| ce | raf_db | 0 | 50.00 ± 0.00 | 55.00 ± 0.00 | – | – |",
    "| ce | synthetic | 0,1 / 0 | 65.00 ± 5.00 | 75.00 ± 5.00 | 80.00 ± 0.00 | 85.00 ± 0.00 |",
    "| eac | raf_db | 0 | 60.00 ± 0.00 (+10.0) | 62.00 ± 0.00 | – | – |",  # raf_db's CE
    "| eac | synthetic | 0 | 90.00 ± 0.00 (+25.0) | 91.00 ± 0.00 | 75.00 ± 0.00 (-5.0) "
    "| 76.00 ± 0.00 |",
    "| lanet | synthetic | 0 | 88.00 ± 0.00 (+23.0) | 89.00 ± 0.00 | – | – |"]
  # Another reference: its rows first, the margins over it.
  lines = workdirs.noise_columns(runs, reference="lanet").splitlines()
  assert lines[2] == "| lanet | synthetic | 0 | 88.00 ± 0.00 | 89.00 ± 0.00 | – | – |"
  assert lines[4].startswith("| ce | synthetic | 0,1 / 0 | 65.00 ± 5.00 (-23.0) |")


def test_console_script_prints_the_same_table(tmp_path):
  """`fer-jax results ...` (the entry function) and `python -m fer_jax.results ...` agree."""
  dirs = [str(_run(tmp_path / "a", "ce", 0, 0.3, 0.60, 0.70, 0.65)),
          str(_run(tmp_path / "b", "ce", 1, 0.3, 0.70, 0.80, 0.75))]
  outputs = []
  for cmd in ([sys.executable, "-m", "fer_jax.results"],
              [sys.executable, "-c", "from fer_jax import cli; cli.main()", "results"]):
    out = tmp_path / f"table{len(outputs)}.md"
    result = subprocess.run([*cmd, *dirs, "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    outputs.append((result.stdout, out.read_text()))
  assert outputs[0] == outputs[1] and "| ce | synthetic | symmetric 0.3 | 0,1 |" in outputs[0][0]
  eac = str(_run(tmp_path / "c", "eac", 0, 0.3, 0.90, 0.91, 0.90))
  result = subprocess.run([sys.executable, "-m", "fer_jax.results", *dirs, eac, "--by_noise"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.stdout.splitlines()[-1] == ("| eac | synthetic | 0 | 90.00 ± 0.00 (+25.0) "
                                            "| 91.00 ± 0.00 |"), result.stderr
  result = subprocess.run([sys.executable, "-m", "fer_jax.results", *dirs, eac, "--by_noise",
                           "--reference", "EAC"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert ("--reference=EAC: no finished run of that method among the runs given (their "
          "methods: ce, eac)") in result.stderr.strip().splitlines()[-1]
