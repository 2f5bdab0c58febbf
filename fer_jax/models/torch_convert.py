"""PyTorch ResNet checkpoints -> fer_jax model directories (the library of
`python -m fer_jax.convert`, whose docstring lists the accepted files).

Every backbone variable of the Flax model must be found with the right shape, and every
tensor of the checkpoint must be used (or be the dropped fc): anything else is an error that
lists the keys. Checkpoints are unpickled through the allow-list of fer_jax/models/safe_pickle.py.
"""

import logging
import pathlib
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import cli, expressions
from fer_jax.models import resnet, safe_pickle, torch_files, weights

_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def find_state_dict(checkpoint, source):
  """The tensor dict inside a loaded checkpoint, without a `module.` prefix."""
  state = checkpoint
  for key in ("state_dict", "model", "model_state_dict"):
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
      break
  if not isinstance(state, dict) or not state:
    raise cli.UsageError(f"{source}: expected a state_dict (dict of tensors), got "
                         f"{type(state).__name__}")
  return {re.sub(r"^module\.", "", k): np.asarray(v) for k, v in state.items()
          if not k.endswith("num_batches_tracked")}


def torch_to_flax(state_dict, num_classes, source):
  """Renames and transposes a torchvision ResNet state_dict into Flax variables.

  Returns:
    ({"params": ..., "batch_stats": ...}, has_head).
  """
  flat, unused = {}, []
  for key, value in state_dict.items():
    parts = key.split(".")
    if parts[0] == "feature":  # the 512->256 Linear of the DREAM/IJB-A res18_naive checkpoint
      logging.info("%s: dropping %s %s (not part of a ResNet)", source, key, value.shape)
      continue
    if parts[0] == "fc":
      if value.shape[0] != num_classes:
        logging.info("%s: dropping %s %s (not %d classes)", source, key, value.shape, num_classes)
        continue
      flat[("params", "head", parts[1] if parts[1] == "bias" else "kernel")] = (
        value if parts[1] == "bias" else value.T
      )
      continue
    # layer2.0.downsample.1.weight -> layer2_0/downsample_1/weight
    names = []
    for p in parts:
      if p.isdigit() and names:
        names[-1] = f"{names[-1]}_{p}"
      else:
        names.append(p)
    *module, leaf = names
    if value.ndim == 4 and leaf == "weight":  # conv: OIHW -> HWIO
      flat[("params", "backbone", *module, "kernel")] = value.transpose(2, 3, 1, 0)
    elif leaf in _BN and value.ndim == 1:
      collection, name = _BN[leaf]
      flat[(collection, "backbone", *module, name)] = value
    else:
      unused.append(f"{key} {value.shape}")
  if unused:
    raise cli.UsageError(f"{source}: tensors with no place in a ResNet: {unused}")
  has_head = ("params", "head", "kernel") in flat
  return flax.traverse_util.unflatten_dict(flat), has_head


def infer_arch(state_dict, source):
  """(arch, width) from the checkpoint's keys and its stem's width."""
  if "conv1.weight" not in state_dict:
    raise cli.UsageError(f"{source}: no conv1.weight; expected a torchvision ResNet state_dict")
  width = state_dict["conv1.weight"].shape[0]
  return ("resnet50" if "layer1.0.conv3.weight" in state_dict else "resnet18"), width


def read_checkpoint(src):
  """A torch.save file, or a pickle of numpy arrays (the VGGFace2 `resnet50_ft_weight.pkl`,
  written by Python 2, hence latin1), read through the allow-list of fer_jax/models/safe_pickle.py.

  Raises:
    ValueError: naming `src` (and the refused global) unless the file holds only tensors,
      arrays and containers.
  """
  if pathlib.Path(src).suffix == ".pkl":
    with open(src, "rb") as f:
      return safe_pickle.load(f, src, encoding="latin1")
  return torch_files.load(src)


def convert(src, out, class_names=expressions.RAF_DB, image_size=224,
            mean=weights.IMAGENET_MEAN, std=weights.IMAGENET_STD, arch=None):
  """Converts the PyTorch checkpoint `src` into the model directory `out`.

  Args:
    arch: a key of `resnet.ARCHS`; default: inferred from the keys, and `resnet50_caffe` for
      a .pkl (the Caffe-style ResNet-50 has the same keys and shapes as torchvision's).

  Returns:
    The model.json metadata written.
  """
  state_dict = find_state_dict(read_checkpoint(src), src)
  inferred, width = infer_arch(state_dict, src)
  if arch is None:
    arch = "resnet50_caffe" if pathlib.Path(src).suffix == ".pkl" else inferred
  if arch.startswith("resnet50") != inferred.startswith("resnet50"):
    raise cli.UsageError(f"{src}: holds a {inferred}, not a {arch}")
  variables, has_head = torch_to_flax(state_dict, len(class_names), src)
  model = resnet.Classifier(arch, len(class_names), width)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  )
  try:
    weights.merge(abstract, variables, source=src)
  except ValueError as e:  # the checkpoint does not fit the model: the message lists the keys
    raise cli.UsageError(str(e)) from e
  meta = {"arch": arch, "width": int(width), "num_classes": len(class_names),
          "class_names": list(class_names), "image_size": image_size, "mean": list(mean),
          "std": list(std), "has_head": has_head, "source": f"converted: {src}"}
  weights.save(out, variables, meta)
  return meta
