r"""LA-Net (landmark-aware learning under label noise, ICCV 2023): fer_jax/methods/lanet.py,
../shared/specs/lanet.md.

  python -m fer_jax.main --config configs/lanet.py:synthetic,noise=0.3 --workdir runs/lanet_syn30
  python -m fer_jax.main --config configs/lanet.py:raf_db,noise=0.3 \
      --config.dataset.data_dir=$RAF --config.dataset.train_landmarks=raf_train_19_landmarks.tensor \
      --config.init_from=weights/msceleb_r18 --workdir runs/lanet_raf30

Arguments after ':' are `data` (bare first word: synthetic | raf_db | affectnet | folder) and
key=value pairs: noise, noise_kind (symmetric | asymmetric_lanet | ...), noise_file, arch
(resnet18 | resnet50), recipe (auto | paper, configs/common.py), runlocal.

Landmarks: the synthetic faces carry their own; AffectNet's 68 CSV points are mapped to the 19
(spec §6); RAF-DB and image folders need `config.dataset.train_landmarks`, a file of (N, 19, 2)
points in the order of the training list, in pixels of the 224 px image: the official repo's
`Model_Data/raf_train_19_landmarks.tensor` (a torch.save file, read without torch) or a .npy.
FERPlus has no landmarks.

Recipe (spec §4): Adam lr 1e-3, no weight decay, linear decay to 0 per step, batch 128,
80 epochs of len(train) // 128 steps, the progressively balanced sampler over the noisy labels,
224 px (bicubic), flip (landmarks mirrored, not re-ordered), RandomResizedCrop (0.75, 1),
ColorJitter 0.4, RandomErasing (p 0.2, 0.02-0.2). One deviation: images are normalised with
the ImageNet mean/std every fer_jax model uses, not the MS-Celeb statistics of the code.
"""

from configs import common

LAYOUTS = ("synthetic", "raf_db", "affectnet", "folder")


def train_ops(size):
  return (f"resize({size}, resample='bicubic')|flip_lr(swap_landmarks=False)|"
          f"random_resized_crop({size}, scale=(0.75, 1.0), truncate_landmarks=True, "
          "resample='bicubic')|"
          "color_jitter(0.4, 0.4, 0.4)|random_erasing(scale=(0.02, 0.2), p=0.2)")


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS, arch="resnet18")
  if arg.data not in LAYOUTS:
    raise ValueError(f"config argument data={arg.data!r}: LA-Net needs training landmarks; "
                     f"expected one of {list(LAYOUTS)}")
  c = common.base_config("lanet", **{k: arg[k] for k in common.ARG_DEFAULTS})
  c.lanet = dict(
    num_points=19,
    neighbours=8,  # K of the in-batch neighbour search in u- and v-space
    history_momentum=0.9,  # omega: t = omega H[i] + (1 - omega) d
    key_momentum=0.999,  # EMA of the key encoder
    confidence=0.7,  # delta: a pseudo-label needs max t >= delta
    temperature=0.1,
    queue_size=8192,
    lam_lm=1.0,
    lam_kl=1.0,
    lam_cl=0.1,
  )
  c.model.arch = arg.arch
  c.seed = 0
  c.num_epochs = 80
  c.batch_size = c.eval_batch_size = 128
  c.optimizer.update(dict(name="adam", lr=1e-3, weight_decay=0.0, schedule="linear"))
  c.input.sampler = "progressive"
  c.input.drop_last = True
  if arg.data in ("raf_db", "folder"):
    c.dataset.train_landmarks = ""  # required: see the module docstring
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  if arg.runlocal:
    c.num_epochs, c.batch_size, c.eval_batch_size = 2, 8, 8
    c.lanet.queue_size = 32
  c.input.train_ops = train_ops(c.input.image_size)
  c.input.eval_ops = f"resize({c.input.image_size}, resample='bicubic')"  # PIL's default
  return c
