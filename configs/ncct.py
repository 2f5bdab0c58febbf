r"""NCCTFER (negative-class consistency, Gera et al. 2023): fer_jax/methods/ncct.py,
../shared/specs/ncct_scn_rul.md §0-§1.

  python -m fer_jax.main --config configs/ncct.py:synthetic,noise=0.3 --workdir runs/ncct_syn30
  python -m fer_jax.main --config configs/ncct.py:raf_db,noise=0.3 --config.dataset.data_dir=$RAF \
      --config.init_from=weights/res18_naive --workdir runs/ncct_raf30

Arguments after ':' are `data` (bare first word) and key=value pairs: noise, noise_kind,
noise_file, recipe (auto | paper, configs/common.py), runlocal, and variant = full (the method) | pcc_only (ablation: the positive
classifier with DNFER's unclamped batch-mean threshold, no negative head loss) | nlnl
(ablation: NLNL negative learning on the non-confident samples instead of the consistency).

Recipe of the official entry scripts (spec §1.2-1.6): weak view resize, pad-4 crop, flip;
strong view the same plus RandAugment (2 ops) and a 16 px cutout; batch 128; Adam without
weight decay, lr 1e-4 for the backbone and 1e-3 for both heads, constant for 40 epochs
(RAF-DB, FERPlus); k = 4 and 4 warm-up epochs. AffectNet: k = 3, 3 warm-up epochs, 12 epochs,
lr divided by 10 at epochs 0 and 10, class-balanced sampler. FERPlus keeps 8 classes and trains
on train+validation. Every dataset is trained in AffectNet's class order, as the code remaps
it. Not reproduced: the code normalises AffectNet with mean = std = 0.5 (ImageNet statistics
here, as for the other datasets).
"""

from configs import common

VARIANTS = {"full": "consistency", "pcc_only": "none", "nlnl": "nlnl"}


def train_ops(size):
  """Weak view `image` and strong view `image_strong`, augmented independently."""
  cut = max(1, round(16 * size / 224))  # 16 px at 224
  strong = "key='image_strong'"
  return (f"resize({size})|copy('image_strong')|pad_crop(4)|flip_lr|pad_crop(4, {strong})|"
          f"flip_lr({strong})|rand_augment(2, {strong})|cutout({cut}, {strong})")


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS, variant="full")
  c = common.base_config("ncct", **{k: arg[k] for k in common.ARG_DEFAULTS})
  if arg.variant not in VARIANTS:
    raise ValueError(f"config argument variant={arg.variant!r}: expected one of {list(VARIANTS)}")
  affectnet = arg.data == "affectnet"
  c.ncct = dict(
    k=3 if affectnet else 4,
    warmup_epochs=3 if affectnet else 4,
    threshold="batch_mean" if arg.variant == "pcc_only" else "clamped_batch_mean",
    mask="k_smallest",
    mask_ties="exactly_k",  # | official: the code's <= cut, more than k classes on exact ties
    target_gradient="weak",
    ce_reduction="sum",
    negative=VARIANTS[arg.variant],
  )
  c.dataset.class_order = "affectnet"
  c.seed = 15 if affectnet else 1
  if not arg.runlocal:
    c.num_epochs = 12 if affectnet else 40
    c.batch_size = c.eval_batch_size = 128
  c.optimizer.update(dict(name="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
                          param_group_lrs=((r"^backbone/", 1e-4),)))
  if affectnet:  # lr / 10 at epoch 0 and at epoch 10
    c.optimizer.update(dict(lr=1e-4, param_group_lrs=((r"^backbone/", 1e-5),),
                            schedule="exponential", decay_rate=0.1, decay_every_epochs=10))
  if arg.data == "ferplus":
    c.dataset.num_classes = 8
    c.dataset.train_split = "train+validation"
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  c.input.train_ops = train_ops(c.input.image_size)
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
