r"""The synthetic noisy-label benchmark of the README: every method, 30% symmetric noise,
three seeds.

  python -m fer_jax.grid --grid configs/grids/synthetic.py --root runs/grid_synthetic
  python -m fer_jax.grid --grid configs/grids/synthetic.py:seeds=1,methods=baseline+ncct  # smaller
  # CE and EAC at EAC's official batch size, 32 (twice the steps of the recipe's 64):
  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,batch_size=32 \
      --root runs/grid_synthetic_b32
  # CE and EAC with EAC's official optimiser (batch 32, lr 2e-4 x0.9 per epoch, 60 epochs):
  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,batch_size=32,lr=2e-4,decay_rate=0.9,epochs=60 \
      --root runs/grid_synthetic_eac_recipe

Arguments: seeds, methods ("+"-separated config names), noise ("+"-separated settings),
batch_size, lr, decay_rate (per epoch), epochs; the last four default to the synthetic recipe
with 45 epochs and are passed to every run only where they differ from it. recipe=paper runs
every method (and the pretraining) at the papers' 224 px with a full-width ResNet-18, and
with each method's own batch size, lr and decay unless given here (and different from the
synthetic recipe's). A GPU job:

  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,recipe=paper,epochs=60 \
      --root runs/grid_synthetic_224 --jobs 6

pretrain=identity starts every run from the face-recognition stand-in
(configs/pretrain_identity.py) instead of the landmark one, pretrain=expression from a model
trained on other faces' true expressions (configs/pretrain_expression.py; its backbone only,
with a fresh head, `init_head=False`, as the papers start):

  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,pretrain=identity \
      --root runs/grid_synthetic_identity

By default every method starts from the same label-free landmark-pretrained backbone (run once first)
and trains with the shared synthetic recipe (configs/common.py) on 1,000 training images for
45 epochs: the same compute as the recipe's 3,000 x 15, but long enough for cross-entropy to
memorise the wrong labels (its noisy-label train accuracy passes 90% and its test accuracy
falls from 61% to 56%), which is the regime the noisy-label methods are built for. With
3,000 x 15 CE does not memorise (noisy train accuracy 63%) and the comparison says little.
"""

import functools

import ml_collections as mlc

from configs import common

# The stand-ins for the papers' face pretraining: configs/pretrain_<name>.py.
PRETRAININGS = ["landmarks", "identity", "expression"]
# The grid's `:arg` optimiser keys and the config fields they set.
FIELDS = dict(batch_size="batch_size", lr="optimizer.lr", decay_rate="optimizer.decay_rate")


def recipe():
  """The synthetic recipe's values of FIELDS (configs/common.py), the grid's defaults."""
  c = common.base_config("ce")
  common.synthetic_recipe(c)
  return {k: functools.reduce(getattr, field.split("."), c) for k, field in FIELDS.items()}


def get_config(arg=None):
  defaults = recipe()
  arg = common.parse_arg(arg, seeds=3, methods="baseline+eac+ncct+lanet+scn+rul",
                         noise="symmetric:0.3", epochs=45, recipe="auto", pretrain="landmarks",
                         **defaults)
  if arg.pretrain not in PRETRAININGS:
    raise ValueError(f"grid argument pretrain={arg.pretrain!r}: expected one of {PRETRAININGS}")
  if arg.recipe not in common.RECIPES:
    raise ValueError(f"grid argument recipe={arg.recipe!r}: expected one of {list(common.RECIPES)}")
  paper = arg.recipe == "paper"
  overrides = [("dataset.num_train", 1000), ("num_epochs", arg.epochs)]
  overrides += [(field, arg[k]) for k, field in FIELDS.items() if arg[k] != defaults[k]]
  if arg.pretrain == "expression":  # its 7-way head is dropped, as the papers drop their fc
    overrides.append(("init_head", False))
  return mlc.ConfigDict(dict(
    data="synthetic,recipe=paper" if paper else "synthetic",
    methods=tuple(arg.methods.split("+")),
    noise=tuple(arg.noise.split("+")),
    seeds=tuple(range(arg.seeds)),
    overrides=tuple(overrides),
    pretrain=f"pretrain_{arg.pretrain}" + (":recipe=paper" if paper else ""),
  ))
