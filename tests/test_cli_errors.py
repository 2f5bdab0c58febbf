"""User mistakes in every command: exit status 2, one `fer_jax <command>: error:` message that
names the culprit (file, flag, field or name), no traceback, and no existing file changed; the
same through the `fer-jax <command>` console script.

Each row runs one command as a subprocess on tiny inputs made in tmp_path; none trains or
compiles a model (the errors come first). The rows are separate test items with no
xdist_group, so `--dist loadgroup` spreads them over the workers.
"""

import dataclasses
import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from fer_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
RAF_CLASSES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]


@dataclasses.dataclass
class Case:
  """What a row's setup made: the command's arguments, the strings the error must contain,
  and paths the command must not create."""

  args: list
  culprits: list
  absent: list = dataclasses.field(default_factory=list)


# --- inputs --------------------------------------------------------------------------------
def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def _model_dir(path, **meta):
  """A model directory that loads (model.json, variables.npz) but holds no real weights: each
  row that uses it fails before the model runs."""
  meta = {"arch": "resnet18", "width": 8, "num_classes": 7, "class_names": RAF_CLASSES,
          "image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "has_head": True, **meta}
  _write(path / "model.json", json.dumps(meta))
  np.savez(path / "variables.npz", unused=np.zeros(1))
  return path


def _fitting_model_dir(path, drop=None):
  """A model directory whose tensors fit its model (random weights), less the tensor `drop`."""
  from tests.test_explain import _model_dir as explain_model_dir  # imports jax: only here

  directory = explain_model_dir(path)
  if drop:
    with np.load(directory / "variables.npz") as f:
      flat = {k: f[k] for k in f.files if k != drop}
    np.savez(directory / "variables.npz", **flat)
  return directory


def _run_dir(path, config=True, summary='{"final_accuracy": 0.5}'):
  path.mkdir(parents=True)
  if config:
    _write(path / "config.json", json.dumps({
      "method": "ce", "seed": 0, "dataset": {"name": "synthetic"},
      "noise": {"kind": "none", "rate": 0.0, "file": ""}}))
  if summary is not None:
    _write(path / "summary.json", summary)
  return path


def _grid_spec(path, **fields):
  spec = {"data": "synthetic", "methods": ("baseline",), "noise": ("none",), "seeds": (0,),
          **fields}
  return _write(path, "import ml_collections as mlc\n\n\ndef get_config(arg=None):\n"
                f"  return mlc.ConfigDict({spec!r})\n")


def _noise(tmp, dataset, data_dir, *extra):
  return ["--dataset", dataset, "--data_dir", str(data_dir), "--kind", "symmetric", "--rate",
          "0.3", "--out", str(tmp / "noisy.txt"), *extra]


def _prepared(tmp):
  return ["--dataset_field", f"prepared_dir={tmp / 'prepared'}"]


def _main(tmp, config="configs/baseline.py:synthetic", *extra):
  return ["--config", config, "--workdir", str(tmp / "run"), *extra]


# --- rows: name -> (command, setup(tmp_path) -> Case) ---------------------------------------
def main_config_missing(tmp):
  return Case(_main(tmp, "configs/nope.py"), ["--config", "configs/nope.py"], [tmp / "run"])


def main_mistyped_field(tmp):
  return Case(_main(tmp, "configs/baseline.py:synthetic", "--config.num_epoch=3"),
              ["--config.num_epoch", "'num_epochs'"], [tmp / "run"])


def main_unknown_method(tmp):
  return Case(_main(tmp, "configs/baseline.py:synthetic", "--config.method=eacc"),
              ["config.method='eacc'", "'eac'", "ncct", "scn"], [tmp / "run"])


def main_unknown_dataset(tmp):
  return Case(_main(tmp, "configs/baseline.py:synthetic", "--config.dataset.name=raf"),
              ["config.dataset.name='raf'", "affectnet", "ferplus", "folder", "raf_db",
               "synthetic"], [tmp / "run"])


def main_config_argument(tmp):
  return Case(_main(tmp, "configs/baseline.py:synthetic,nosie=0.3"),
              ["configs/baseline.py:synthetic,nosie=0.3", "'nosie'"], [tmp / "run"])


def main_mistyped_op(tmp):  # raised while the step is traced: before anything is written
  return Case(_main(tmp, "configs/baseline.py:runlocal=true",
                    "--config.input.train_ops=resize(32)|flipp"),
              ["config.input.train_ops", "'flipp'", "'flip_lr'"], [tmp / "run"])


def main_noise_kind(tmp):
  return Case(_main(tmp, "configs/baseline.py:synthetic", "--config.noise.kind=symetric"),
              ["config.noise.kind='symetric'", "'symmetric'"], [tmp / "run"])


def main_ferplus_header(tmp):
  _write(tmp / "fer/fer2013.csv", "emotion,pixel,Usage\n")
  _write(tmp / "fer/fer2013new.csv", "Usage,Image name\n")
  return Case(_main(tmp, "configs/baseline.py:ferplus",
                    f"--config.dataset.data_dir={tmp / 'fer'}",
                    f"--config.dataset.prepared_dir={tmp / 'prepared'}"),
              [f"{tmp / 'fer/fer2013.csv'}, line 1", "'pixels'"])


def noise_unknown_dataset(tmp):
  return Case(_noise(tmp, "raf", tmp), ["--dataset='raf'", "raf_db", "ferplus", "synthetic"],
              [tmp / "noisy.txt"])


def noise_raf_db_bad_label(tmp):
  path = _write(tmp / "raf/EmoLabel/list_patition_label.txt", "train_00001.jpg 9\n")
  return Case(_noise(tmp, "raf_db", tmp / "raf", *_prepared(tmp)),
              [f"{path}, line 1", "'9'", "1..7"], [tmp / "noisy.txt"])


def noise_affectnet_columns(tmp):
  lists = tmp / "an/Manually_Annotated_file_lists"
  _write(lists / "training.csv", "a/b.jpg,1,2\n")
  _write(lists / "validation.csv", "a/b.jpg,1,2\n")
  return Case(_noise(tmp, "affectnet", tmp / "an", *_prepared(tmp)),
              [f"{lists / 'training.csv'}, line 1", "3 columns"], [tmp / "noisy.txt"])


def noise_folder_without_images(tmp):
  for split in ("train/happy", "test/happy"):
    _write(tmp / "faces" / split / "notes.txt", "not an image")
  return Case(_noise(tmp, "folder", tmp / "faces", *_prepared(tmp)),
              [str(tmp / "faces/train/happy"), "class folder with no images"],
              [tmp / "noisy.txt"])


def noise_folder_csv_missing_image(tmp):
  for split in ("train", "test"):
    _write(tmp / f"faces/{split}.csv", "path,label\nmissing.jpg,happy\n")
  return Case(_noise(tmp, "folder", tmp / "faces", *_prepared(tmp), "--dataset_field",
                     "format=csv"),
              [f"{tmp / 'faces/train.csv'}, line 2", "missing.jpg"], [tmp / "noisy.txt"])


def noise_synthetic_field_value(tmp):
  return Case(_noise(tmp, "synthetic", "", "--dataset_field", "num_train=many"),
              ["--dataset_field num_train=many", "integer"], [tmp / "noisy.txt"])


def noise_out_exists(tmp):
  _write(tmp / "noisy.txt", "earlier labels\n")
  return Case(_noise(tmp, "synthetic", ""), [f"{tmp / 'noisy.txt'} exists"])


def convert_not_a_checkpoint(tmp):
  path = _write(tmp / "garbage.pth", "not a torch file")
  return Case(["--torch", str(path), "--out", str(tmp / "out")], [str(path), "torch.save"],
              [tmp / "out"])


def convert_refused_pickle(tmp):
  marker = tmp / "ran"
  path = tmp / "evil.pkl"
  path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
  return Case(["--torch", str(path), "--out", str(tmp / "out")], [str(path), "os.system"],
              [tmp / "out", marker])


def convert_not_a_resnet(tmp):
  path = tmp / "weights.pkl"
  path.write_bytes(pickle.dumps({"fc.weight": np.zeros((3, 2), np.float32)}, protocol=2))
  return Case(["--torch", str(path), "--out", str(tmp / "out")], [str(path), "conv1.weight"],
              [tmp / "out"])


def convert_out_holds_a_model(tmp):
  path = _write(tmp / "garbage.pth", "never read")
  _model_dir(tmp / "model")
  return Case(["--torch", str(path), "--out", str(tmp / "model")],
              [f"--out={tmp / 'model'}", "already holds a model"])


def predict_folder_without_images(tmp):
  _write(tmp / "faces/notes.txt", "not an image")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--output",
               str(tmp / "p.csv"), str(tmp / "faces")], ["no images", str(tmp / "faces")],
              [tmp / "p.csv"])


def predict_missing_model(tmp):
  _write(tmp / "faces/a.jpg", "x")
  return Case(["--checkpoint", str(tmp / "nomodel"), "--output", str(tmp / "p.csv"),
               str(tmp / "faces")], [str(tmp / "nomodel")], [tmp / "p.csv"])


def predict_model_without_head(tmp):
  _write(tmp / "faces/a.jpg", "x")
  return Case(["--checkpoint", str(_model_dir(tmp / "model", has_head=False)), "--output",
               str(tmp / "p.csv"), str(tmp / "faces")], [str(tmp / "model"), "no classifier head"],
              [tmp / "p.csv"])


def predict_unreadable_image(tmp):
  path = _write(tmp / "faces/broken.jpg", "not a jpeg")
  return Case(["--checkpoint", str(_fitting_model_dir(tmp)), "--output",
               str(tmp / "p.csv"), str(tmp / "faces")], [str(path), "unreadable image"],
              [tmp / "p.csv"])


def predict_video_without_detect_faces(tmp):
  path = _write(tmp / "clips/party.mp4", "never read")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--output", str(tmp / "p.csv"),
               str(path)], [str(path), "a video", "--detect_faces"], [tmp / "p.csv"])


def predict_face_flag_without_detect_faces(tmp):
  _write(tmp / "faces/a.jpg", "x")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--output", str(tmp / "p.csv"),
               "--annotate_dir", str(tmp / "ann"), str(tmp / "faces")],
              ["--annotate_dir needs --detect_faces"], [tmp / "p.csv", tmp / "ann"])


def predict_annotate_dir_exists(tmp):
  _write(tmp / "faces/a.jpg", "x")
  _write(tmp / "ann/a.jpg", "earlier annotation")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--detect_faces", "--output",
               str(tmp / "p.csv"), "--annotate_dir", str(tmp / "ann"), str(tmp / "faces")],
              [f"--annotate_dir={tmp / 'ann'} exists"], [tmp / "p.csv"])


def predict_model_missing_a_tensor(tmp):
  _write(tmp / "faces/a.jpg", "x")
  tensor = "params/backbone/layer2_0/conv1/kernel"
  model = _fitting_model_dir(tmp, drop=tensor)
  return Case(["--checkpoint", str(model), "--output", str(tmp / "p.csv"), str(tmp / "faces")],
              [f"{model / 'variables.npz'}: does not fit", f"missing {tensor} (3, 3, 8, 16)"],
              [tmp / "p.csv"])


def evaluate_not_a_workdir(tmp):
  return Case(["--checkpoint", str(_model_dir(tmp / "model"))],
              [str(tmp / "model"), "config.json", "--config"], [tmp / "model/eval_test"])


def evaluate_out_exists(tmp):
  run = _run_dir(tmp / "run")
  _write(run / "eval_test/metrics.json", "{}")
  return Case(["--checkpoint", str(run)], [str(run / "eval_test"), "exists"])


def evaluate_mistyped_config_field(tmp):
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--config",
               "configs/baseline.py:raf_db", "--config.dataset.dat_dir=/data"],
              ["--config.dataset.dat_dir", "'data_dir'"], [tmp / "model/eval_test"])


def audit_relabel_without_labels_out(tmp):
  return Case(["--checkpoint", str(_run_dir(tmp / "run")), "--relabel_top", "5"],
              ["--relabel_top", "--labels_out"], [tmp / "run/audit_loss"])


def audit_config_not_json(tmp):
  run = tmp / "run"
  _write(run / "config.json", "{not json")
  return Case(["--checkpoint", str(run)], [str(run / "config.json")], [run / "audit_loss"])


def explain_folder_without_images(tmp):
  _write(tmp / "faces/notes.txt", "not an image")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--out", str(tmp / "cams.png"),
               str(tmp / "faces")], ["no images", str(tmp / "faces")], [tmp / "cams.png"])


def explain_face_flag_without_detect_faces(tmp):
  _write(tmp / "faces/a.jpg", "x")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--out", str(tmp / "cams.png"),
               "--score_threshold", "0.5", str(tmp / "faces")],
              ["--score_threshold needs --detect_faces"], [tmp / "cams.png"])


def explain_out_exists(tmp):
  _write(tmp / "faces/a.jpg", "x")
  _write(tmp / "cams.png", "earlier figure")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--out", str(tmp / "cams.png"),
               str(tmp / "faces")], [f"--out={tmp / 'cams.png'}", "exists"])


def faces_align_output_exists(tmp):
  _write(tmp / "raw/a.jpg", "never read")
  _write(tmp / "aligned/faces.csv", "earlier crops")
  return Case(["align", "--input", str(tmp / "raw"), "--output", str(tmp / "aligned")],
              [f"--output={tmp / 'aligned'} exists"])


def export_missing_model(tmp):
  return Case(["--checkpoint", str(tmp / "nomodel"), "--out", str(tmp / "m.jaxexport")],
              [str(tmp / "nomodel")], [tmp / "m.jaxexport"])


def export_out_exists(tmp):
  _write(tmp / "m.jaxexport.json", "{}")
  return Case(["--checkpoint", str(_model_dir(tmp / "model")), "--out",
               str(tmp / "m.jaxexport")], [str(tmp / "m.jaxexport.json"), "exists"],
              [tmp / "m.jaxexport"])


def grid_missing_spec(tmp):
  return Case(["--grid", str(tmp / "nope.py"), "--root", str(tmp / "root")],
              [str(tmp / "nope.py")], [tmp / "root"])


def grid_method_without_config(tmp):
  spec = _grid_spec(tmp / "spec.py", methods=("baseline", "eacc"), pretrain="pretrain_landmarks")
  # Fails before the pretraining runs: the root (and its commands.sh) is never made.
  return Case(["--grid", str(spec), "--root", str(tmp / "root")],
              ["'eacc'", "configs/eacc.py", "'eac'", "baseline"], [tmp / "root"])


def grid_bad_noise_setting(tmp):
  spec = _grid_spec(tmp / "spec.py", noise=("none", "symmetric:2"))
  return Case(["--grid", str(spec), "--root", str(tmp / "root")], ["'symmetric:2'"],
              [tmp / "root"])


def results_no_finished_run(tmp):
  run = _run_dir(tmp / "run", summary=None)
  return Case([str(run)], ["no finished run", str(run)])


def results_run_without_config(tmp):
  run = _run_dir(tmp / "run", config=False)
  return Case([str(run)], [str(run / "config.json")])


def results_out_exists(tmp):
  _write(tmp / "table.md", "earlier table\n")
  return Case([str(_run_dir(tmp / "run")), "--out", str(tmp / "table.md")],
              [f"--out={tmp / 'table.md'}", "exists"])


ROWS = {
  "main": [main_config_missing, main_mistyped_field, main_unknown_method, main_unknown_dataset,
           main_config_argument, main_noise_kind, main_ferplus_header, main_mistyped_op],
  "noise": [noise_unknown_dataset, noise_raf_db_bad_label, noise_affectnet_columns,
            noise_folder_without_images, noise_folder_csv_missing_image,
            noise_synthetic_field_value, noise_out_exists],
  "convert": [convert_not_a_checkpoint, convert_refused_pickle, convert_not_a_resnet,
              convert_out_holds_a_model],
  "predict": [predict_folder_without_images, predict_missing_model, predict_model_without_head,
              predict_unreadable_image, predict_video_without_detect_faces,
              predict_face_flag_without_detect_faces, predict_annotate_dir_exists,
              predict_model_missing_a_tensor],
  "faces": [faces_align_output_exists],
  "evaluate": [evaluate_not_a_workdir, evaluate_out_exists, evaluate_mistyped_config_field],
  "audit": [audit_relabel_without_labels_out, audit_config_not_json],
  "explain": [explain_folder_without_images, explain_face_flag_without_detect_faces,
              explain_out_exists],
  "export": [export_missing_model, export_out_exists],
  "grid": [grid_missing_spec, grid_method_without_config, grid_bad_noise_setting],
  "results": [results_no_finished_run, results_run_without_config, results_out_exists],
}


def _run(command, args, **env):
  return _subprocess([sys.executable, "-m", f"fer_jax.{command}", *args], **env)


def _run_script(command, args):
  """`fer-jax <command> args` through the console script's entry function."""
  return _subprocess([sys.executable, "-c", "from fer_jax import cli; cli.main()", command, *args])


def _subprocess(cmd, **env):
  environ = {k: v for k, v in os.environ.items() if k != cli.TRACEBACK_ENV}
  environ.update(PYTHONPATH=str(ROOT), XLA_FLAGS="", JAX_PLATFORMS="cpu", **env)
  return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=180,
                        check=False)


def _snapshot(root):
  return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def _check(result, head, case, before):
  """`result` is one user-error line starting with `head` that names every culprit of `case`,
  and nothing in `before` (or `case.absent`) changed."""
  output = result.stdout + result.stderr
  assert result.returncode == cli.USAGE_EXIT, output
  assert "Traceback" not in output
  assert result.stderr.count(head) == 1, result.stderr
  message = result.stderr[result.stderr.index(head):]
  for culprit in case.culprits:
    assert culprit in message, (culprit, message)
  assert f"{cli.TRACEBACK_ENV}=1" in message
  for path, (mtime, data) in before.items():
    assert path.is_file() and path.stat().st_mtime_ns == mtime and path.read_bytes() == data, path
  for path in case.absent:
    assert not path.exists(), path


@pytest.mark.parametrize("command,setup", [(c, s) for c, rows in ROWS.items() for s in rows],
                         ids=lambda v: v.__name__ if callable(v) else v)
def test_user_error_is_one_line(command, setup, tmp_path):
  case = setup(tmp_path)
  before = _snapshot(tmp_path)
  _check(_run(command, case.args), f"fer_jax {command}: error: ", case, before)


SCRIPT_COMMANDS = {module: name for name, (module, _) in cli.COMMANDS.items()}


@pytest.mark.parametrize("command,setup", [(c, rows[-1]) for c, rows in ROWS.items()],
                         ids=lambda v: v.__name__ if callable(v) else v)
def test_console_script_runs_each_command_with_its_flags(command, setup, tmp_path):
  """`fer-jax <name>` is `python -m fer_jax.<module>`: the same arguments, the same error."""
  case = setup(tmp_path)
  before = _snapshot(tmp_path)
  name = SCRIPT_COMMANDS[command]
  _check(_run_script(name, case.args), f"fer-jax {name}: error: ", case, before)


def test_console_script_lists_its_commands_and_names_an_unknown_one(capsys):
  for argv, code in ((["fer-jax"], cli.USAGE_EXIT), (["fer-jax", "--help"], 0)):
    with pytest.raises(SystemExit) as exit_:
      cli.main(argv)
    assert exit_.value.code == code
    out = capsys.readouterr()
    assert all(f"  {name} " in out.out + out.err for name in cli.COMMANDS)
  with pytest.raises(SystemExit) as exit_:
    cli.main(["fer-jax", "resutls"])
  assert exit_.value.code == cli.USAGE_EXIT
  assert "fer-jax: error: unknown command 'resutls'; did you mean 'results'?" in (
    capsys.readouterr().err)


def test_installed_console_script(tmp_path):
  """`pip install -e .` puts `fer-jax` beside the interpreter."""
  script = pathlib.Path(sys.executable).parent / "fer-jax"
  if not script.exists():
    pytest.skip("fer-jax is not installed: pip install -e .")
  case = results_out_exists(tmp_path)
  _check(_subprocess([str(script), "results", *case.args]), "fer-jax results: error: ", case, {})


def test_traceback_on_request(tmp_path):
  case = results_no_finished_run(tmp_path)
  result = _run("results", case.args, **{cli.TRACEBACK_ENV: "1"})
  assert result.returncode == cli.USAGE_EXIT, result.stderr
  assert "Traceback (most recent call last)" in result.stderr
  assert "fer_jax results: error: no finished run" in result.stderr
