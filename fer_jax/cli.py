"""How every `python -m fer_jax.<command>` runs its main: user mistakes as one line, bugs in full;
and the `fer-jax <command>` console script (`main`), which runs the same commands.

A mistake the user can fix (a bad flag, a missing or malformed input file, an unknown name)
prints one message to stderr and exits with status 2:

  fer_jax <command>: error: <message> (FER_JAX_TRACEBACK=1 for the traceback)

Exit statuses: 0 success, 2 a user error (the command line, a config or an input file must
change), 3 a training run diverged (a non-finite loss or metric: the learning rate or the data
must change; `Diverged`), 4 no space left on a disk (`NoSpace`: the message names the path and
the space needed), 1 anything else (a bug: Python's own traceback, unshortened; or a command's
own failure report, e.g. a grid whose runs failed), 130 interrupted (Ctrl-C). Statuses 3 and 4
print one line as user errors do, headed `diverged:` and `no space:`.

User errors are `UsageError`, absl's `app.UsageError` and flag errors, ml_collections config
flag errors, the input errors of fer_jax (`prepared.DataError`, `safe_pickle.RefusedError`,
both ValueErrors that name the file) and missing, existing or unreadable paths
(FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError).
Any other exception, a bare ValueError from numpy or jax included, is a bug and keeps its
traceback. FER_JAX_TRACEBACK=1 prints the traceback of user errors too.

`fer-jax <command> [args]` is `python -m fer_jax.<module> [args]` for each of COMMANDS (`fer-jax
train` runs fer_jax/main.py), with the same flags; its errors read `fer-jax <command>: error:`.
"""

import ast
import difflib
import errno
import importlib.util
import os
import pathlib
import runpy
import sys
import traceback

from absl import app, flags

TRACEBACK_ENV = "FER_JAX_TRACEBACK"
USAGE_EXIT = 2
DIVERGED_EXIT = 3
NO_SPACE_EXIT = 4
INTERRUPT_EXIT = 130
_PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)
# ValueError subclasses of modules that may not be loaded (importing them costs seconds).
_INPUT_ERRORS = (("fer_jax.data.prepared", "DataError"), ("fer_jax.models.safe_pickle", "RefusedError"))
_WRAPPED = "Error whilst parsing config file"
# The console script's commands: name -> (module of fer_jax that `python -m` runs, summary).
COMMANDS = {
  "train": ("main", "train and evaluate one config (resumes in its workdir)"),
  "noise": ("noise", "write noisy training labels in the dataset's label-file format"),
  "convert": ("convert", "PyTorch ResNet checkpoints -> model directories"),
  "predict": ("predict", "class probabilities of face images (or faces in photos, videos) -> CSV"),
  "faces": ("faces", "aligned face crops of raw photos; LA-Net landmark files"),
  "evaluate": ("evaluate", "accuracy, confusion matrix and calibration of a model"),
  "audit": ("audit", "rank a run's training labels by how likely they are wrong"),
  "explain": ("explain", "class activation map figures"),
  "export": ("export", "a model as StableHLO (jax alone) or ONNX (onnxruntime, no jax)"),
  "demo": ("demo", "a local web page: a photo's faces, their expressions and CAMs (demo extra)"),
  "grid": ("grid", "methods x noise x seeds from a grid spec, then tables and plots"),
  "results": ("results", "mean ± std tables over the seeds of finished runs"),
}
_SCRIPT = "fer-jax"
_console_command = None  # the command `main` runs, for the error messages' head


class UsageError(ValueError):
  """A mistake the user can fix: a bad flag, config value, input file or name. The message
  names the culprit (flag, field, file and line) and what was expected."""


class Stopped(Exception):
  """A command that cannot go on for a reason outside its command line; one line, its own exit
  status (module docstring)."""

  exit_status = 1
  head = "error"


class Diverged(Stopped):
  """A training run whose loss or a metric went non-finite; the message names the step, the
  metric, the checkpoint kept and the settings to look at."""

  exit_status = DIVERGED_EXIT
  head = "diverged"


class NoSpace(Stopped):
  """A write that does not fit on its disk; the message names the path and the space needed."""

  exit_status = NO_SPACE_EXIT
  head = "no space"


def no_space_error(error):
  """The ENOSPC OSError in `error`'s chain of causes, or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return error
    error = error.__cause__ or error.__context__
  return None


def is_user_error(error):
  """Whether `error` is a mistake of the user's (see the module docstring)."""
  if isinstance(error, (UsageError, app.UsageError, flags.Error, *_PATH_ERRORS)):
    return True
  for module, name in _INPUT_ERRORS:
    cls = getattr(sys.modules.get(module), name, None)
    if cls is not None and isinstance(error, cls):
      return True
  return False


def message(error):
  """The text of a user error: an OSError as `<path>: <reason>`, otherwise its message."""
  if isinstance(error, OSError) and error.filename is not None and error.strerror:
    return f"{error.filename}: {error.strerror}"
  return str(error)


def run(main, command=None, argv=None):
  """`absl.app.run(main)` that reports user errors as one line (module docstring)."""
  command = command or _command_name()
  try:
    app.run(_plain_usage_errors(main), argv, flags_parser=_parse_flags)
  except KeyboardInterrupt as interrupt:
    if os.environ.get(TRACEBACK_ENV) == "1":
      traceback.print_exc()
    # The trainer's interrupt says where the run stopped and what it kept.
    detail = f": {interrupt}" if str(interrupt) else ""
    print(f"{_program(command)}: interrupted{detail}", file=sys.stderr)
    sys.exit(INTERRUPT_EXIT)
  except Exception as error:
    full = no_space_error(error)
    if full is not None and not isinstance(error, Stopped):
      # A disk filled up where no write checked the space first: the path, without the need.
      error = NoSpace(f"{message(full)}; free space there and run the same command again")
    if not isinstance(error, Stopped) and not is_user_error(error):
      raise
    if os.environ.get(TRACEBACK_ENV) == "1":
      traceback.print_exc()
      hint = ""
    else:
      hint = f" ({TRACEBACK_ENV}=1 for the traceback)"
    head = error.head if isinstance(error, Stopped) else "error"
    print(f"{_program(command)}: {head}: {message(error).strip()}{hint}", file=sys.stderr)
    sys.exit(error.exit_status if isinstance(error, Stopped) else USAGE_EXIT)


def _command_name():
  if _console_command is not None:
    return _console_command
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name:
    return spec.name.rpartition(".")[2]
  return pathlib.Path(sys.argv[0]).stem


def _program(command):
  return f"{_SCRIPT} {command}" if _console_command is not None else f"fer_jax {command}"


def _plain_usage_errors(main):
  """`main` raising UsageError where it raised app.UsageError, which absl answers with the whole
  module docstring before the message."""

  def wrapped(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      raise UsageError(str(e)) from e

  return wrapped


# --- the console script ------------------------------------------------------------------
def main(argv=None):
  """`fer-jax <command> [args]`: runs the module of COMMANDS[command] as `python -m` does, with
  `args` as its command line; exits as that command exits."""
  global _console_command
  argv = sys.argv if argv is None else list(argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(_script_usage(), file=sys.stdout if len(argv) > 1 else sys.stderr)
    sys.exit(0 if len(argv) > 1 else USAGE_EXIT)
  command = argv[1]
  if command not in COMMANDS:
    print(f"{_SCRIPT}: error: unknown command {command!r}; "
          + unknown_name_hint(command, list(COMMANDS)), file=sys.stderr)
    sys.exit(USAGE_EXIT)
  _console_command = command
  sys.argv = [f"{_SCRIPT} {command}", *argv[2:]]
  runpy.run_module(f"fer_jax.{COMMANDS[command][0]}", run_name="__main__", alter_sys=True)


def _script_usage():
  width = max(map(len, COMMANDS))
  rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
  return (f"usage: {_SCRIPT} <command> [flags and arguments]\n\ncommands:\n{rows}\n\n"
          f"Each takes the flags of `python -m fer_jax.<module>` (train: fer_jax.main);\n"
          f"`{_SCRIPT} <command> --help` lists them.")


# --- flags ---------------------------------------------------------------------------------
def _parse_flags(argv):
  """absl's flag parsing, with every error a UsageError naming the flag (absl prints usage
  hints over two lines, and errors inside ml_collections config flags escape it)."""
  configs = _config_flags()
  for name in configs:
    arg = _flag_argument(argv, name)
    path = arg.partition(":")[0] if arg else None
    if path is not None and not pathlib.Path(path).is_file():
      raise UsageError(f"--{name}={arg}: no such config file: {path}")
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, ValueError, TypeError, KeyError, AttributeError, OSError,
          ImportError) as e:
    if not configs and not isinstance(e, flags.Error):
      raise
    # Raised by absl, while running a config file, or applying an override to a config.
    _check_overrides(argv, configs)
    inner, text = _flag_message(e)
    if inner is not e or not isinstance(e, flags.Error):
      name = configs[0] if len(configs) == 1 else "config"
      text = f"--{name}={_flag_argument(argv, name)}: {text}"
      if isinstance(inner, ModuleNotFoundError) and inner.name == "configs":
        text += " (run from the repository root, where configs/ is)"
    raise UsageError(text) from e
  for name in configs:
    # ml_collections keeps an unreadable config file's error until the config is first used.
    try:
      getattr(flags.FLAGS[name].value, "keys", None)
    except OSError as e:
      raise UsageError(f"--{name}={_flag_argument(argv, name)}: {e.__cause__ or e}") from e
  return rest


def _config_flags():
  """Names of the ml_collections config-file flags defined (none if ml_collections' config
  flags were never imported)."""
  module = sys.modules.get("ml_collections.config_flags.config_flags")
  if module is None:
    return []
  parser = module.ConfigFileFlagParser
  return [name for name in flags.FLAGS if isinstance(flags.FLAGS[name].parser, parser)
          and flags.FLAGS[name].name == name]


def _flag_argument(argv, name):
  """The value given to `--name` in `argv` (the last one), or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    for prefix in (f"--{name}", f"-{name}"):
      if arg == prefix and i + 1 < len(argv):
        value = argv[i + 1]
      elif arg.startswith(prefix + "="):
        value = arg[len(prefix) + 1 :]
  return value


def _flag_message(error):
  """(the original error, its message): ml_collections re-raises a config file's ValueError or
  TypeError with the file's whole traceback as text, and absl wraps that again."""
  inner = error
  while _WRAPPED in str(inner) and inner.__context__ is not None:
    inner = inner.__context__
  if _WRAPPED in str(inner):
    return inner, str(inner).partition("\n")[0]
  if isinstance(inner, KeyError) and inner.args:
    return inner, str(inner.args[0])
  return inner, str(inner)


def _check_overrides(argv, configs):
  """Raises UsageError for the first `--<config>.<path>` whose path the config does not have,
  with the nearest field names; returns if every path exists."""
  module = sys.modules.get("ml_collections.config_flags.config_flags")
  for name in configs if module else ():
    arg = _flag_argument(argv, name)
    if arg is None:
      continue
    try:
      config = module.ConfigFileFlagParser(name, lock_config=False).parse(arg)
      config.keys()
    except Exception:  # noqa: BLE001 (the config itself fails: the original error says how)
      return
    for override in argv[1:]:
      if override == "--":
        break
      flag = override.lstrip("-").partition("=")[0]
      if flag.startswith("no") and not flag.startswith(f"{name}."):
        flag = flag[2:]
      if flag.startswith(f"{name}."):
        _check_path(config, flag, name, arg)


def _check_path(config, flag, name, arg):
  node, where = config, name
  for part in flag.split(".")[1:]:
    fields = list(node.keys()) if hasattr(node, "keys") else None
    if fields is None:
      raise UsageError(f"--{flag}: {where} is not a config block but a "
                       f"{type(node).__name__} (config file {arg})")
    if part not in fields:
      raise UsageError(f"--{flag}: {where} has no field {part!r} (config file {arg}); "
                       + unknown_name_hint(part, fields, "its fields are", list_all=False))
    node, where = node[part], f"{where}.{part}"


# --- names -------------------------------------------------------------------------------
def unknown_name_hint(name, valid, listing="expected one of", list_all=True):
  """`did you mean X?` when a valid name is close, and the list of valid names (only when
  none is close, unless `list_all`)."""
  close = difflib.get_close_matches(name, valid, n=1)
  hint = f"did you mean {close[0]!r}?" if close else ""
  if list_all or not close:
    hint += (" " if hint else "") + f"{listing} {', '.join(valid)}"
  return hint


def check_name(name, valid, what):
  """Raises UsageError unless `name` is one of `valid`; `what` names the flag or field."""
  if name not in valid:
    raise UsageError(f"{what}={name!r}: unknown; " + unknown_name_hint(str(name), list(valid)))


def module_names(package, *required):
  """Sorted names of the modules of `package` that define every name of `required` at top
  level, read from their source (importing them all would cost seconds)."""
  spec = importlib.util.find_spec(package)
  names = []
  for location in spec.submodule_search_locations:
    for path in sorted(pathlib.Path(location).glob("*.py")):
      if not path.stem.startswith("_") and defines(path, *required):
        names.append(path.stem)
  return sorted(names)


def defines(path, *names):
  """Whether the Python file `path` defines every one of `names` at top level (not run)."""
  return set(names) <= _top_level_names(path)


def _top_level_names(path):
  defined = set()
  try:
    body = ast.parse(path.read_text()).body
  except (SyntaxError, UnicodeDecodeError):
    return defined
  for node in body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      defined.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      defined.update(t.id for t in targets if isinstance(t, ast.Name))
  return defined


def dataset_names():
  """Datasets: `fer_jax.data.<name>` modules with `load` and `DEFAULTS` (data/sources.py)."""
  return module_names("fer_jax.data", "load", "DEFAULTS")


def method_names():
  """Methods: `fer_jax.methods.<name>` modules that define `loss_fn`."""
  return module_names("fer_jax.methods", "loss_fn")


def check_dataset(name, what="config.dataset.name"):
  check_name(name, dataset_names(), what)


def check_method(name, what="config.method"):
  check_name(name, method_names(), what)
