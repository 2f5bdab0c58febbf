"""Results tables: grouping by method and noise, mean ± std over seeds."""

import json

from fer_jax import results


def _run(path, method, seed, rate, final, best, last5):
  path.mkdir(parents=True)
  kind = "symmetric" if rate else "none"
  (path / "config.json").write_text(json.dumps({
    "method": method, "seed": seed, "dataset": {"name": "synthetic"},
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
  lines = results.table(results.load_runs([*dirs, tmp_path / "unfinished"])).splitlines()
  assert len(lines) == 5
  assert "| ce | synthetic | symmetric 0.3 | 0,1 | 65.00 ± 5.00 | 75.00 ± 5.00 | 70.00 ± 5.00 |" in lines
  assert "| eac | synthetic | symmetric 0.3 | 0 | 90.00 ± 0.00 | 90.00 ± 0.00 | 90.00 ± 0.00 |" in lines
  assert any(line.startswith("| ce | synthetic | clean | 0 |") for line in lines)
