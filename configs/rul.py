r"""RUL (Relative Uncertainty Learning, NeurIPS 2021): fer_jax/methods/rul.py,
../shared/specs/ncct_scn_rul.md §4.

  python -m fer_jax.main --config configs/rul.py:synthetic,noise=0.3 --workdir runs/rul_syn30
  python -m fer_jax.main --config configs/rul.py:raf_db,noise=0.3 \
      --config.dataset.data_dir=$RAF --config.init_from=weights/msceleb_r18 --workdir runs/rul_raf30

Arguments after ':' are `data` (bare first word) and key=value pairs: noise, noise_kind,
noise_file, recipe (auto | paper, configs/common.py), runlocal.

Recipe (the official code): Adam with coupled L2 1e-4, lr 2e-4 for backbone and branches and
2e-3 for the classifier, x0.9 per epoch, 60 epochs (the paper says 70), batch 64, 224 px;
`basic_aug` (p 0.5: a flip or Gaussian pixel noise), random erasing (0.02-0.25); feature size
64, dropout 0.4 in both branches.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS)
  c = common.base_config("rul", **arg)
  c.rul = {}  # the method's own fields are the model's neck (resnet.UncertaintyNeck)
  c.model.neck = "uncertainty"
  c.num_epochs = 60
  c.batch_size = 64
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  # The classifier learns 10x faster than the rest, in the synthetic recipe too.
  c.optimizer.param_group_lrs = ((r"^head/", 10 * c.optimizer.lr),)
  if arg.runlocal:
    c.num_epochs, c.batch_size = 2, 8
  c.input.train_ops = (f"basic_aug(p=0.5)|resize({c.input.image_size})|"
                       "random_erasing(scale=(0.02, 0.25))")
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
