"""The experiment grid: its plan, one real run, skipping finished runs, tables and plots."""

import json
import sys

import numpy as np
import pytest

from fer_jax import expressions
from fer_jax.experiments import grid_runs
from tests.test_results import _run

SPEC = '''
import ml_collections as mlc

def get_config(arg=None):
  return mlc.ConfigDict(dict(data="synthetic,runlocal=true", methods=("baseline",),
                             noise=("none", "symmetric:0.3"), seeds=(0, 1),
                             overrides=(("dataset.cache_dir", "{cache}"), ("num_epochs", 1))))
'''


def _spec(tmp_path):
  path = tmp_path / "spec.py"
  path.write_text(SPEC.format(cache=tmp_path / "cache"))
  return grid_runs.load_spec(path)


def test_plan_names_every_run_and_its_exact_command(tmp_path):
  runs = grid_runs.plan(_spec(tmp_path), tmp_path / "g")
  assert [w.name for w, _ in runs] == ["baseline_clean_s0", "baseline_clean_s1",
                                       "baseline_symmetric0.3_s0", "baseline_symmetric0.3_s1"]
  cmd = runs[3][1]
  assert "configs/baseline.py:synthetic,runlocal=true,noise=0.3,noise_kind=symmetric" in cmd
  assert "--config.seed=1" in cmd and "--config.num_epochs=1" in cmd
  assert grid_runs.noise_args("file:/d/noise01.txt") == (",noise_file=/d/noise01.txt",
                                                     "file-noise01")
  with pytest.raises(ValueError, match="grid noise setting 'symmetric:3'"):
    grid_runs.noise_args("symmetric:3")


def test_grid_runs_what_is_missing_and_tabulates(tmp_path):
  runs = grid_runs.plan(_spec(tmp_path), tmp_path / "g")
  (tmp_path / "g").mkdir()
  # Three runs finished already (fake summaries); the fourth really runs.
  for (workdir, _), final in zip(runs[:3], (0.5, 0.6, 0.4)):
    seed = int(workdir.name[-1])
    _run(workdir, "ce", seed, 0.3 if "symmetric" in workdir.name else 0.0, final, final, final)
  assert grid_runs.execute(runs, tmp_path / "g") == []
  assert len((tmp_path / "g" / "commands.sh").read_text().splitlines()) == 1
  assert json.loads((runs[3][0] / "summary.json").read_text())["final_accuracy"] >= 0
  assert grid_runs.execute(runs, tmp_path / "g") == []  # all done: nothing re-runs
  assert len((tmp_path / "g" / "commands.sh").read_text().splitlines()) == 1
  text = grid_runs.write_tables(runs, tmp_path / "g")
  assert "| ce | synthetic | clean | 0,1 | 55.00 ± 5.00 |" in text
  # Two noise settings: also side by side, in the grid's order.
  assert ("| method | dataset | seeds | clean final | clean best | symmetric 0.3 final | "
          "symmetric 0.3 best |\n| --- | --- | --- | --- | --- | --- | --- |\n"
          "| ce | synthetic | 0,1 | 55.00 ± 5.00 |") in text
  assert "--config.seed=1" in text
  csv_lines = (tmp_path / "g" / "results.csv").read_text().splitlines()
  assert csv_lines[0].startswith("method,dataset,noise,rate,seeds,final_mean,final_std")
  assert len(csv_lines) == 3  # header, ce clean, ce symmetric 0.3 (fake and real runs alike)
  grid_runs.plot(runs, tmp_path / "g")
  assert (tmp_path / "g" / "accuracy_vs_noise.png").exists()
  assert (tmp_path / "g" / "curves.png").exists()


def test_raf_db_grid_gives_lanet_its_landmarks_and_needs_a_data_dir(tmp_path):
  spec = grid_runs.load_spec("configs/grids/raf_db.py:data_dir=/d,landmarks=lm.tensor,seeds=1,"
                        "noise=symmetric:0.3")
  commands = {w.name: cmd for w, cmd in grid_runs.plan(spec, tmp_path)}
  assert "--config.dataset.train_landmarks=lm.tensor" in commands["lanet_symmetric0.3_s0"]
  assert not any("train_landmarks" in c for c in commands["baseline_symmetric0.3_s0"])
  assert all("--config.dataset.data_dir=/d" in c for c in commands.values())
  no_landmarks = grid_runs.load_spec("configs/grids/raf_db.py:data_dir=/d")
  assert "lanet" not in no_landmarks.methods and len(no_landmarks.noise) == 3
  with pytest.raises(ValueError, match="needs data_dir"):
    grid_runs.load_spec("configs/grids/raf_db.py")


def test_synthetic_grid_trains_1000_images_45_epochs_and_takes_a_batch_size(tmp_path):
  spec = grid_runs.load_spec("configs/grids/synthetic.py")
  default = {w.name: cmd for w, cmd in grid_runs.plan(spec, tmp_path)}
  assert len(default) == 1 + 8 * 3  # pretraining, then eight methods x three seeds
  assert "--config.resup.peer_init_from=init_from" in default["resup_symmetric0.3_s0"]
  eac = default["eac_symmetric0.3_s2"]
  assert {"--config.dataset.num_train=1000", "--config.num_epochs=45",
          f"--config.init_from={tmp_path / 'pretrain' / 'model'}",
          "--config.init_head=False"} <= set(eac)  # the expression backbone alone, as the papers
  assert "configs/pretrain_expression.py" in default["pretrain"]
  assert not any(arg.startswith("--config.batch_size") for arg in eac)  # the recipe's 64
  b32 = grid_runs.plan(grid_runs.load_spec("configs/grids/synthetic.py:methods=baseline+eac,batch_size=32"),
                  tmp_path)
  assert [w.name for w, _ in b32][1:3] == ["baseline_symmetric0.3_s0", "eac_symmetric0.3_s0"]
  assert all("--config.batch_size=32" in cmd for w, cmd in b32 if w.name != "pretrain")
  official = grid_runs.load_spec("configs/grids/synthetic.py:methods=eac,batch_size=32,lr=2e-4,"
                            "decay_rate=0.9,epochs=60")
  assert dict(official.overrides) == {"dataset.num_train": 1000, "num_epochs": 60,
                                      "batch_size": 32, "optimizer.lr": 2e-4,
                                      "optimizer.decay_rate": 0.9, "init_head": False}
  paper = {w.name: cmd for w, cmd in grid_runs.plan(
    grid_runs.load_spec("configs/grids/synthetic.py:methods=eac,recipe=paper,epochs=60"), tmp_path)}
  assert "configs/pretrain_expression.py:recipe=paper" in paper["pretrain"]
  assert "configs/eac.py:synthetic,recipe=paper,noise=0.3,noise_kind=symmetric" in paper[
    "eac_symmetric0.3_s0"]
  assert not any(arg.startswith("--config.batch_size") for arg in paper["eac_symmetric0.3_s0"])
  assert grid_runs.load_spec("configs/grids/synthetic.py:pretrain=identity").pretrain == (
    "pretrain_identity")
  landmarks = grid_runs.load_spec("configs/grids/synthetic.py:pretrain=landmarks")
  assert landmarks.pretrain == "pretrain_landmarks"
  assert "init_head" not in dict(landmarks.overrides)  # a landmark model has no head to drop
  with pytest.raises(ValueError, match="pretrain='celeb'"):
    grid_runs.load_spec("configs/grids/synthetic.py:pretrain=celeb")


def test_jobs_run_together_after_the_pretraining_and_failures_are_named(tmp_path):
  log = tmp_path / "order.txt"

  def run(name, seconds, code=0):
    script = (f"import pathlib, sys, time; log = pathlib.Path({str(log)!r})\n"
              f"with log.open('a') as f: f.write('start {name}\\n')\n"
              f"time.sleep({seconds})\n"
              f"with log.open('a') as f: f.write('end {name}\\n')\n"
              f"sys.exit({code})")
    return tmp_path / name, [sys.executable, "-c", script]

  runs = [run("pretrain", 0.5), run(grid_runs.NOISE_MODEL, 0.5), run("a", 1.0),
          run("b", 1.0, code=3), run("c", 0.0)]
  assert grid_runs.execute(runs, tmp_path, jobs=2) == [tmp_path / "b"]
  order = log.read_text().splitlines()
  assert order[:2] == ["start pretrain", "end pretrain"]  # the runs read its export
  # ... and the noise model's predictions
  assert order[2:4] == [f"start {grid_runs.NOISE_MODEL}", f"end {grid_runs.NOISE_MODEL}"]
  assert sorted(order[4:6]) == ["start a", "start b"]  # two at a time
  assert order.index("start c") > min(order.index("end a"), order.index("end b"))


def test_instance_noise_grid_runs_its_clean_ce_model_first_and_draws_both_flip_matrices(
    tmp_path):
  spec = grid_runs.load_spec("configs/grids/synthetic.py:methods=baseline+eac+ncct+lanet+scn+"
                             "rul+nla+resup,noise=symmetric:0.3+instance:0.3")
  runs = grid_runs.plan(spec, tmp_path)
  names = [w.name for w, _ in runs]
  assert names[:2] == ["pretrain", grid_runs.NOISE_MODEL] and len(names) == 2 + 8 * 2 * 3
  model = dict(runs)[tmp_path / grid_runs.NOISE_MODEL]
  assert "configs/baseline.py:synthetic,record_train_probabilities=true" in model
  assert {"--config.dataset.num_train=1000", "--config.num_epochs=45", "--config.seed=0",
          f"--config.init_from={tmp_path / 'pretrain' / 'model'}"} <= set(model)
  resup = dict(runs)[tmp_path / "resup_instance0.3_s2"]
  assert (f"configs/resup.py:synthetic,noise=0.3,noise_kind=instance,noise_predictions="
          f"{tmp_path / grid_runs.NOISE_MODEL}") in resup
  assert "--config.seed=2" in resup
  assert grid_runs.grid_workdirs(runs) == [w for w, _ in runs[2:]]
  # flip_matrices.png: one panel per setting, from the noise/ files the runs wrote.
  clean = np.repeat(np.arange(7), 10)
  for name, noisy in (("baseline_symmetric0.3_s0", (clean + 1) % 7),
                      ("baseline_instance0.3_s0", np.where(clean == 1, 5, clean)),
                      ("eac_instance0.3_s0", clean)):
    noise = tmp_path / name / "noise"
    noise.mkdir(parents=True)
    np.savez(noise / "labels.npz", clean=clean, noisy=noisy, flipped=clean != noisy)
    kind = name.split("_")[1][:-3]
    (noise / "report.json").write_text(json.dumps(
      {"kind": kind, "rate": 0.3, "class_names": list(expressions.RAF_DB)}))
  panels, class_names = grid_runs.flip_panels(runs)
  assert [p[0] for p in panels] == ["symmetric 0.3", "instance 0.3"]  # eac's: the same setting
  assert class_names == list(expressions.RAF_DB) and (panels[1][2] == 5).sum() == 20
  grid_runs.plot(runs, tmp_path)
  assert (tmp_path / "flip_matrices.png").exists()
