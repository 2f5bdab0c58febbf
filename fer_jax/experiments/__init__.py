"""Experiments over many runs: grids of methods x noise x seeds (grid_runs.py) and the tables of
finished runs (workdirs.py)."""
