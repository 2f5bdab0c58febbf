r"""EAC (Erasing Attention Consistency, ECCV 2022): fer_jax/methods/eac.py, ../shared/specs/eac.md.

  python -m fer_jax.main --config configs/eac.py:synthetic,noise=0.3 --workdir runs/eac_syn30
  python -m fer_jax.main --config configs/eac.py:raf_db,noise_file=$RAF/EmoLabel/noise01.txt \
      --config.dataset.data_dir=$RAF --config.init_from=weights/msceleb_r18 --workdir runs/eac01

Arguments after ':' are `data` (bare first word: synthetic | raf_db | ferplus | affectnet |
folder) and key=value pairs: noise (rate), noise_kind, noise_file (a noisy label list such as
EAC's noise01.txt), arch (resnet18 | resnet50 | resnet50_caffe), view (auto | mirror | reflip:
how the flipped view is built; auto follows the official code, `mirror` for clean labels and
`reflip` for noisy ones), recipe (auto | paper, configs/common.py), runlocal.

Recipe (eac.md §2-3): Adam with coupled L2 1e-4, lr 2e-4 for ResNet-18 and 1e-4 for ResNet-50,
x0.9 per epoch, batch 32, 60 epochs, 224 px; Gaussian pixel noise (p 0.5, var 30) on the main
view before resizing; random erasing (scale 0.02-0.25) after normalisation; lam = 5. The
official default backbone is the Caffe-style ResNet-50 from the VGGFace2 pickle
(`arch=resnet50_caffe`, convert it with `python -m fer_jax.convert --torch
resnet50_ft_weight.pkl`); the paper's headline numbers use the MS-Celeb ResNet-18 (default here).
"""

from configs import common

ERASE = "random_erasing(scale=(0.02, 0.25)"


def train_ops(size, view):
  """The official augmentation: noise on the raw main image, resize, erase; `reflip` adds the
  flipped raw image as `image_flip`, augmented on its own (no noise, its own erased box)."""
  if view == "mirror":
    return f"gaussian_noise(p=0.5, var=30.0)|resize({size})|{ERASE})"
  return (f"copy('image_flip')|flip_lr(p=1.0, key='image_flip')|gaussian_noise(p=0.5, var=30.0)|"
          f"resize({size})|resize({size}, key='image_flip')|{ERASE})|{ERASE}, key='image_flip')")


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS, arch="resnet18", view="auto")
  c = common.base_config("eac", **{k: arg[k] for k in common.ARG_DEFAULTS})
  noisy = c.noise.kind != "none"
  c.eac = dict(lam=5.0, second_view=("reflip" if noisy else "mirror") if arg.view == "auto"
               else arg.view)
  c.model.arch = arg.arch
  c.optimizer.lr = 2e-4 if arg.arch == "resnet18" else 1e-4
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  c.input.train_ops = train_ops(c.input.image_size, c.eac.second_view)
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
