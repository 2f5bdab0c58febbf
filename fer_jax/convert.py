r"""Converts PyTorch ResNet checkpoints to fer_jax model directories.

  python -m fer_jax.convert --torch resnet18_msceleb.pth --out weights/msceleb_r18
  # then train with: --config.init_from=weights/msceleb_r18

Accepts the MS-Celeb-1M `resnet18_msceleb.pth` (a dict with `state_dict`, torchvision names,
1000-way fc), bare torchvision state_dicts (ResNet-18 or -50), a `module.` prefix
(DataParallel), whole trained FER models (backbone + 7/8-way `fc`), the MS-Celeb
`res18_naive.pth_MSceleb.tar` of SCN/DNFER/NCCTFER (`module.` prefix, plus a `feature` Linear
that is dropped), and EAC's VGGFace2
`resnet50_ft_weight.pkl` (a pickle of numpy arrays for the Caffe-style ResNet-50, 8631-way fc). `fc` becomes the head
only when its size equals the number of class names; otherwise it is dropped and the model
directory holds the backbone alone.

Every backbone variable of the Flax model must be found with the right shape, and every
tensor of the checkpoint must be used (or be the dropped fc): anything else is an error that
lists the keys.

Checkpoints are unpickled through an allow-list (fer_jax/models/safe_pickle.py): a file whose pickle
names anything but tensors, numpy arrays and containers (`os.system`, a model class) is refused
with a ValueError naming the file and that global, before any of it runs.
"""

import pathlib

from absl import flags

from fer_jax import cli, expressions
from fer_jax.data import pipeline
from fer_jax.models import resnet, torch_convert, weights

flags.DEFINE_string("torch", None, "PyTorch checkpoint (.pth/.pt/.tar), or the VGGFace2 "
                    "resnet50_ft_weight.pkl of EAC.")
flags.DEFINE_enum("arch", None, sorted(resnet.ARCHS), "Backbone; default: inferred "
                  "(resnet50_caffe for a .pkl).")
flags.DEFINE_string("out", None, "Output model directory (must not hold a model already).")
flags.DEFINE_list("class_names", list(expressions.RAF_DB),
                  "Class names in the model's output order (default: RAF-DB basic order).")
flags.DEFINE_integer("image_size", 224, "Eval input size recorded with the model.")
flags.DEFINE_list("mean", [str(v) for v in pipeline.IMAGENET_MEAN], "Eval RGB mean on [0, 1].")
flags.DEFINE_list("std", [str(v) for v in pipeline.IMAGENET_STD], "Eval RGB std on [0, 1].")


def _floats(name, values):
  try:
    out = tuple(map(float, values))
  except ValueError as e:
    raise cli.UsageError(f"--{name}={','.join(values)}: expected 3 numbers (R,G,B)") from e
  if len(out) != 3:
    raise cli.UsageError(f"--{name}={','.join(values)}: expected 3 numbers (R,G,B)")
  return out


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}: flags are --name=value")
  mean, std = _floats("mean", f.mean), _floats("std", f.std)
  if len(set(f.class_names)) != len(f.class_names) or not all(f.class_names):
    raise cli.UsageError(f"--class_names={','.join(f.class_names)}: expected distinct, "
                         "non-empty names")
  # Before reading the checkpoint: the output check of weights.save comes after the work.
  if any((pathlib.Path(f.out) / n).exists() for n in (weights.META, weights.VARIABLES)):
    raise cli.UsageError(f"--out={f.out} already holds a model; choose another output directory")
  meta = torch_convert.convert(f.torch, f.out, tuple(f.class_names), f.image_size, mean, std, f.arch)
  print(f"wrote {f.out}: {meta['arch']} width {meta['width']}, "
        f"{'with' if meta['has_head'] else 'without'} a {meta['num_classes']}-way head")


if __name__ == "__main__":
  flags.mark_flags_as_required(["torch", "out"])
  cli.run(main)
