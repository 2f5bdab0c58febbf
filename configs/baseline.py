r"""Plain cross-entropy: the baseline every noisy-label FER method is compared with.

Run on the embedded synthetic dataset (a few minutes on a 2-core CPU):
  python -m fer_jax.main --config configs/baseline.py:synthetic --workdir runs/baseline

Arguments after ':' are `data` (bare first word) and key=value pairs:
  data=synthetic | raf_db | ferplus | affectnet | folder, noise=0.0 (training-label noise rate),
  noise_kind=symmetric | asymmetric_lanet | asymmetric_ncct, runlocal=False.
e.g. `configs/baseline.py:raf_db,noise=0.3 --config.dataset.data_dir=~/data/raf-basic`.
Training recipe for real data follows the ResNet-18 setting of eac.md §1b/§3: Adam with coupled
L2 1e-4, lr 2e-4 decayed x0.9 per epoch, batch 32, 60 epochs, 224 px, random erasing.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS)
  c = common.base_config("ce", **arg)
  c.ce = {}  # the method's own fields; plain CE has none
  c.input.train_ops = (
    f"resize({c.input.image_size})|flip_lr|random_erasing(scale=(0.02, 0.25))"
  )
  if arg.data == "synthetic" and not arg.runlocal:
    # From scratch at 32 px, where XLA:CPU convolutions are fast: a few minutes on 2 cores.
    # Half-width ResNet-18 and no erasing (at 32 px a box can hide the whole mouth).
    c.input.image_size = 32
    c.input.train_ops = "resize(32)|flip_lr|pad_crop(2)"
    c.model.width = 32
    c.num_epochs = 15
    c.batch_size = 64
    c.optimizer.lr = 1e-3
    c.optimizer.decay_rate = 0.95
    c.log_every_steps = 20
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
