"""Model files: variables as .npz plus a model.json that says how to use them.

`python -m fer_jax.convert` writes them from PyTorch checkpoints, training exports them to
`<workdir>/model`, `config.init_from` loads them into a model, `fer_jax.inference` runs them.

model.json: {"arch", "width", "num_classes", "class_names", "image_size", "mean", "std",
"has_head", "neck", "source"}.
"""

import json
import logging
import pathlib
import zipfile

import flax
import jax
import numpy as np

from fer_jax import cli, expressions

VARIABLES = "variables.npz"
META = "model.json"
# What a model directory holds: the modules inference runs (resnet.Classifier's), not what only
# training uses (a negative head, a landmark branch, a log-variance branch).
INFERENCE_MODULES = ("backbone", "neck", "head")
# The RGB normalisation on [0, 1] a model records unless its config sets another.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def save(directory, variables, meta):
  """Writes `variables` ({"params", "batch_stats"} trees) and `meta` into `directory`.

  Raises:
    FileExistsError: if the directory already holds a model (never overwritten).
  """
  directory = pathlib.Path(directory)
  if (directory / VARIABLES).exists() or (directory / META).exists():
    raise FileExistsError(f"{directory} already holds a model; choose another output directory")
  directory.mkdir(parents=True, exist_ok=True)
  flat = flax.traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  np.savez(directory / VARIABLES, **{k: np.asarray(v) for k, v in flat.items()})
  (directory / META).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(directory):
  """The model.json of a model directory.

  Raises:
    FileNotFoundError: naming the missing file.
    cli.UsageError: naming the file when it is not JSON.
  """
  path = _existing(pathlib.Path(directory) / META)
  try:
    return json.loads(path.read_text())
  except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
    raise cli.UsageError(f"{path}: not a model.json ({e}); expected a model directory written "
                         "by `python -m fer_jax.convert` or by training") from e


def load(directory, expected=None):
  """Returns (variables, meta) from a model directory.

  `expected`: the model's variables, or their shapes (jax.eval_shape of its init); then every
  tensor of its INFERENCE_MODULES must be in variables.npz with its shape, and no other tensor
  of those modules (the file's other modules, which only training used, are not read).

  Raises:
    FileNotFoundError: naming the missing file.
    cli.UsageError: naming the file when it is unreadable, and every missing, unexpected or
      mis-shaped tensor when it does not fit `expected`.
  """
  path = _existing(pathlib.Path(directory) / VARIABLES)
  meta = read_meta(directory)
  try:
    with np.load(path) as f:
      variables = flax.traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")
  except (ValueError, EOFError, OSError, zipfile.BadZipFile) as e:
    raise cli.UsageError(f"{path}: unreadable ({type(e).__name__}: {e}); expected the "
                         "variables.npz of training or `python -m fer_jax.convert`") from e
  if expected is not None:
    want, have = (flax.traverse_util.flatten_dict(inference_variables(v), sep="/")
                  for v in (expected, variables))
    problems = _misfits(want, have, required=lambda key: True)
    if problems:
      raise cli.UsageError(f"{path}: does not fit the model of its {META} (arch "
                           f"{meta.get('arch')}, width {meta.get('width')}, "
                           f"{meta.get('num_classes')} classes):\n  " + "\n  ".join(problems))
  return variables, meta


def _existing(path):
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: expected a model directory written by "
                            "`python -m fer_jax.convert` or by training (<workdir>/model)")
  return path


def inference_variables(variables):
  """`variables` limited to INFERENCE_MODULES, in every collection."""
  return {collection: {k: v for k, v in tree.items() if k in INFERENCE_MODULES}
          for collection, tree in variables.items()}


# The modules whose last axis indexes the classes: the classifier, NCCTFER's negative head.
CLASS_HEADS = ("head", "negative_head")


def without_heads(loaded):
  """`loaded` less its class-indexed heads (CLASS_HEADS): a run then starts with fresh ones."""
  params = {k: v for k, v in loaded.get("params", {}).items() if k not in CLASS_HEADS}
  return {**loaded, "params": params}


def align_heads(loaded, meta, class_names, *, source):
  """`loaded` with its class-indexed heads (CLASS_HEADS) in the order of `class_names`.

  A model trained on RAF-DB order that starts a run in AffectNet order (NCCTFER's remap) would
  otherwise score every class with another class's weights. Classes match by canonical name
  ("Happy" = "happiness"); a head whose classes are not those of `class_names` is dropped, so
  the run starts with a fresh one.
  """
  heads = [name for name in CLASS_HEADS if name in loaded.get("params", {})]
  have = [expressions.canonical(n) for n in meta.get("class_names", ())]
  want = [expressions.canonical(n) for n in class_names]
  if not heads or have == want:
    return loaded
  if sorted(have) != sorted(want):
    logging.warning("%s: its classes %s are not the run's %s; starting with fresh %s", source,
                    meta.get("class_names"), list(class_names), heads)
    return without_heads(loaded)
  order = np.array([have.index(n) for n in want])
  logging.info("%s: reordering %s from %s to %s", source, heads, meta["class_names"],
               list(class_names))
  params = {name: ({k: np.asarray(v)[..., order] for k, v in tree.items()}
                   if name in heads else tree) for name, tree in loaded["params"].items()}
  return {**loaded, "params": params}


def merge(init, loaded, *, source):
  """Puts `loaded` variables into the freshly initialised `init` tree.

  Every backbone variable of the model must be in `loaded` with the same shape; every loaded
  variable must exist in the model. A head is taken only when its shape matches (a converted
  1000-way ImageNet/MS-Celeb fc has been dropped already; a 7-way FER head on an 8-class
  model is skipped with a warning). Variables the model has beyond backbone and matching
  head keep their init values.

  `source` is where `loaded` came from: a model directory (messages name its variables.npz)
  or a checkpoint file.

  Raises:
    cli.UsageError: listing every missing, unexpected or mis-shaped variable, naming `source`.
  """
  init_flat = flax.traverse_util.flatten_dict(init, sep="/")
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep="/")
  for key, value in list(loaded_flat.items()):
    if "/head/" in key and key in init_flat and np.shape(value) != init_flat[key].shape:
      logging.warning("%s: %s has shape %s, model wants %s; keeping the new head", source, key,
                      np.shape(value), init_flat[key].shape)
      del loaded_flat[key]
  problems = _misfits(init_flat, loaded_flat, required=lambda key: "/backbone/" in f"/{key}")
  if problems:
    path = pathlib.Path(source)
    where = path / VARIABLES if (path / VARIABLES).is_file() else source
    raise cli.UsageError(f"{where}: does not fit the model:\n  " + "\n  ".join(problems))
  kept = [k for k in init_flat if k not in loaded_flat]
  if kept:
    logging.info("%s: %d variables keep their init values: %s", source, len(kept), kept)
  merged = {**init_flat, **{k: np.asarray(v, init_flat[k].dtype) for k, v in loaded_flat.items()}}
  return flax.traverse_util.unflatten_dict(merged, sep="/")


def _misfits(want, have, required):
  """A line for each tensor of `have` that `want` lacks or shapes otherwise, and for each key
  of `want` that `required(key)` and `have` lacks."""
  problems = [f"unexpected {k} {np.shape(v)}" for k, v in have.items() if k not in want]
  problems += [f"{k}: shape {np.shape(v)}, model expects {want[k].shape}"
               for k, v in have.items() if k in want and np.shape(v) != want[k].shape]
  return problems + [f"missing {k} {want[k].shape}" for k in want
                     if required(k) and k not in have]
