r"""Plain cross-entropy: the baseline every noisy-label FER method is compared with.

Run on the embedded synthetic dataset (a few minutes on a 2-core CPU):
  python -m fer_jax.main --config configs/baseline.py:synthetic --workdir runs/baseline

Arguments after ':' are `data` (bare first word) and key=value pairs:
  data=synthetic | raf_db | ferplus | affectnet | folder, noise=0.0 (training-label noise rate),
  noise_kind=symmetric | asymmetric_lanet | asymmetric_ncct | instance, noise_file=PATH (a noisy
  label file in the dataset's format), noise_predictions=DIR (instance: the recording CE run),
  recipe=auto | paper (the paper recipe on the synthetic data too; configs/common.py),
  runlocal=False, record_train_probabilities=False (below).
e.g. `configs/baseline.py:raf_db,noise=0.3 --config.dataset.data_dir=~/data/raf-basic`.
The model of the instance-dependent noise protocol (docs/noise.md), a CE run on the clean labels
that writes <workdir>/train_probabilities.npz:
  python -m fer_jax.main --config configs/baseline.py:synthetic,record_train_probabilities=true \
    --workdir runs/ce_clean
Training recipe for real data follows the ResNet-18 setting of eac.md §1b/§3: Adam with coupled
L2 1e-4, lr 2e-4 decayed x0.9 per epoch, batch 32, 60 epochs, 224 px, random erasing.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, **common.ARG_DEFAULTS, record_train_probabilities=False)
  c = common.base_config("ce", **{k: arg[k] for k in common.ARG_DEFAULTS})
  # True: keep the mean over the epochs of every training sample's eval-mode softmax (an
  # end-of-epoch pass over the training set) and write it to <workdir>/train_probabilities.npz
  # at the end, for noise_kind=instance (fer_jax/methods/ce.py).
  c.ce = dict(record_train_probabilities=arg.record_train_probabilities)
  if common.uses_synthetic_recipe(arg):
    common.synthetic_recipe(c)
  c.input.train_ops = (
    f"resize({c.input.image_size})|flip_lr|random_erasing(scale=(0.02, 0.25))"
  )
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
