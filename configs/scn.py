r"""SCN (Self-Cure Network, CVPR 2020): fer_jax/methods/scn.py, ../shared/specs/ncct_scn_rul.md §3.

  python -m fer_jax.main --config configs/scn.py:synthetic,noise=0.3 --workdir runs/scn_syn30
  python -m fer_jax.main --config configs/scn.py:raf_db,noise=0.3 \
      --config.dataset.data_dir=$RAF --config.init_from=weights/msceleb_r18 --workdir runs/scn_raf30

Arguments after ':' are `data` (bare first word) and key=value pairs: noise, noise_kind,
noise_file, recipe (auto | paper, configs/common.py), runlocal.

Recipe (the official code): Adam lr 1e-3 (torch's default; the script's --lr is for SGD only)
with coupled L2 1e-4, x0.9 per epoch, 70 epochs, batch 64, 224 px; `basic_aug` (p 0.5: a flip
or Gaussian pixel noise), random erasing (0.02-0.25) after normalisation; beta 0.7, margin
0.15 (the README suggests 0.07 at batch 64), relabel from epoch 10 when the top probability
beats the label's by 0.2. The code loads ImageNet weights (its MS-Celeb loading matches no
key); any converted ResNet-18 works with `--config.init_from`.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS)
  c = common.base_config("scn", **arg)
  c.scn = dict(beta=0.7, margin=0.15, relabel_epoch=10, relabel_margin=0.2,
               relabel_group="all")  # all (code) | low (paper text)
  c.num_epochs = 70
  c.batch_size = 64
  c.optimizer.update(dict(name="adam", lr=1e-3, weight_decay=1e-4, schedule="exponential",
                          decay_rate=0.9))
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  if arg.runlocal:
    c.num_epochs, c.batch_size = 2, 8
    c.scn.relabel_epoch = 2
  c.input.train_ops = (f"basic_aug(p=0.5)|resize({c.input.image_size})|"
                       "random_erasing(scale=(0.02, 0.25))")
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
