r"""ReSup (Reliable label noise Suppression, IEEE Transactions on Affective Computing 2025):
fer_jax/methods/resup.py, ../shared/specs/nla_resup.md §2.

  python -m fer_jax.main --config configs/resup.py:synthetic,noise=0.3 --workdir runs/resup_syn30
  python -m fer_jax.convert --torch resnet18-f37072fd.pth --out weights/imagenet_r18  # torchvision's
  python -m fer_jax.main --config configs/resup.py:raf_db,noise=0.3 \
      --config.dataset.data_dir=$RAF --config.init_from=weights/msceleb_r18 \
      --config.resup.peer_init_from=weights/imagenet_r18 --workdir runs/resup_raf30

Arguments after ':' are `data` (bare first word) and key=value pairs: noise, noise_kind,
noise_file, recipe (auto | paper, configs/common.py), runlocal.

Two networks: network 0 starts from config.init_from (the MS-Celeb ResNet-18) and is the model
that is evaluated and exported; network 1 from config.resup.peer_init_from (the code's
torchvision ImageNet ResNet-18), "init_from" for the same start as network 0, or "" for a random
init (a warning says so).

Recipe (the official code): Adam lr 2e-4, no weight decay, x0.1 at epochs 10 and 20, 30 epochs,
batch 96, 224 px; resize, flip (p 0.5), a 32 px zero-padded random crop applied with p 0.2
(scaled with the image size), random erasing (p 0.5, 0.02-0.25) after normalisation; MSE
weight 5; the weight tables refitted after every epoch.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS)
  c = common.base_config("resup", **arg)
  c.resup = dict(mse_weight=5.0, peer_init_from="")
  c.num_epochs = 30
  c.batch_size = 96
  c.optimizer.update(dict(name="adam", lr=2e-4, weight_decay=0.0, schedule="exponential",
                          decay_rate=0.1, decay_every_epochs=10))
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  if arg.runlocal:
    c.num_epochs, c.batch_size = 2, 8
  size = c.input.image_size
  pad = max(1, round(32 * size / 224))  # RandomApply([RandomCrop(224, padding=32)], p=0.2)
  c.input.train_ops = (f"resize({size})|flip_lr(p=0.5)|pad_crop({pad}, p=0.2)|"
                       "random_erasing(scale=(0.02, 0.25))")
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
