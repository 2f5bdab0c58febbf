"""Model files: variables as .npz plus a model.json that says how to use them.

`python -m fer_jax.convert` writes them from PyTorch checkpoints, training exports them to
`<workdir>/model`, `config.init_from` loads them into a model, `fer_jax.predict` runs them.

model.json: {"arch", "width", "num_classes", "class_names", "image_size", "mean", "std",
"has_head", "source"}.
"""

import json
import logging
import pathlib

import flax
import jax
import numpy as np

from fer_jax.data import classes

VARIABLES = "variables.npz"
META = "model.json"


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


def load(directory):
  """Returns (variables, meta) from a model directory.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  directory = pathlib.Path(directory)
  for name in (VARIABLES, META):
    if not (directory / name).is_file():
      raise FileNotFoundError(
        f"{directory / name} not found: expected a model directory written by "
        "`python -m fer_jax.convert` or by training (<workdir>/model)"
      )
  with np.load(directory / VARIABLES) as f:
    variables = flax.traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")
  return variables, json.loads((directory / META).read_text())


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
  have = [classes.canonical(n) for n in meta.get("class_names", ())]
  want = [classes.canonical(n) for n in class_names]
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

  Raises:
    ValueError: listing every missing, unexpected or mis-shaped variable, naming `source`.
  """
  init_flat = flax.traverse_util.flatten_dict(init, sep="/")
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep="/")
  problems, merged = [], dict(init_flat)
  for key, value in loaded_flat.items():
    if key not in init_flat:
      problems.append(f"unexpected {key} {np.shape(value)}")
    elif np.shape(value) != init_flat[key].shape:
      if "/head/" in key:
        logging.warning("%s: %s has shape %s, model wants %s; keeping the new head", source, key,
                        np.shape(value), init_flat[key].shape)
        continue
      problems.append(f"{key}: shape {np.shape(value)}, model expects {init_flat[key].shape}")
    else:
      merged[key] = np.asarray(value, init_flat[key].dtype)
  for key in init_flat:
    if "/backbone/" in f"/{key}" and key not in loaded_flat:
      problems.append(f"missing {key} {init_flat[key].shape}")
  if problems:
    raise ValueError(f"{source}: does not fit the model:\n  " + "\n  ".join(problems))
  kept = [k for k in init_flat if k not in loaded_flat]
  if kept:
    logging.info("%s: %d variables keep their init values: %s", source, len(kept), kept)
  return flax.traverse_util.unflatten_dict(merged, sep="/")
