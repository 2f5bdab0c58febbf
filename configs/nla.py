r"""NLA (Navigating Label Ambiguity, AAAI 2025): fer_jax/methods/nla.py,
../shared/specs/nla_resup.md §1.

  python -m fer_jax.main --config configs/nla.py:synthetic,noise=0.3 --workdir runs/nla_syn30
  python -m fer_jax.main --config configs/nla.py:raf_db,noise=0.3 \
      --config.dataset.data_dir=$RAF --config.init_from=weights/msceleb_r18 --workdir runs/nla_raf30

Arguments after ':' are `data` (bare first word) and key=value pairs: noise, noise_kind,
noise_file, stats (raf_db: the code's RAF-DB mean and std, the default | imagenet: those of
every other fer_jax model), recipe (auto | paper, configs/common.py), runlocal.

Recipe (the official code, HEAD b86f31f): Adam with coupled L2 1e-4, lr 1e-4, x0.9 per epoch,
60 epochs, batch 32, 224 px; Gaussian pixel noise (p 0.5, var 30) on the raw image, resize,
flip (p 0.5), random erasing (p 0.5, 0.02-0.3) after normalisation; the mirror view is the
flipped final image; normalisation with RAF-DB's mean and std (recorded in model.json, so
evaluation, predict and the exports use them too). Loss weights 0.5 / 0.5 / 0.5, t_lambda 1,
the two Gaussians of the code.
"""

from configs import common

# The official code's normalisation: RAF-DB's RGB mean and std on [0, 1].
RAF_DB_MEAN, RAF_DB_STD = (0.577, 0.4494, 0.4001), (0.2628, 0.2395, 0.2383)
STATS = ("raf_db", "imagenet")


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS, stats="raf_db")
  if arg.stats not in STATS:
    raise ValueError(f"config argument stats={arg.stats!r}: expected one of {list(STATS)}")
  c = common.base_config("nla", **{k: arg[k] for k in common.ARG_DEFAULTS})
  c.nla = dict(
    lam=0.5,  # weight of the CE and of the weighted CE; the JSD's is 1 - lam
    t_lambda=1.0,  # scale of the true branch's weight
    true_mean=(0.5, 0.5), true_std=0.8, true_ratio=2.0,
    false_mean=(0.30, 0.15), false_std=0.91, false_ratio=6.0,
    ramp_rate=15.0,  # eps(t) = 1 - exp(-ramp_rate * t / num_epochs)
  )
  c.num_epochs = 60
  c.batch_size = 32
  c.optimizer.update(dict(name="adam", lr=1e-4, weight_decay=1e-4, schedule="exponential",
                          decay_rate=0.9, decay_every_epochs=1))
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  if arg.runlocal:
    c.num_epochs, c.batch_size = 2, 8
  c.input.train_ops = (f"gaussian_noise(p=0.5, var=30.0)|resize({c.input.image_size})|"
                       "flip_lr(p=0.5)|random_erasing(scale=(0.02, 0.3))")
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  if arg.stats == "raf_db":
    c.input.mean, c.input.std = RAF_DB_MEAN, RAF_DB_STD
  return c
