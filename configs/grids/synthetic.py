r"""The synthetic noisy-label benchmark: every method, 30% symmetric noise by default, three
seeds (the README's table adds 30% instance-dependent noise: noise=symmetric:0.3+instance:0.3,
below).

  python -m fer_jax.grid --grid configs/grids/synthetic.py --root runs/grid_synthetic
  python -m fer_jax.grid --grid configs/grids/synthetic.py:seeds=1,methods=baseline+ncct  # smaller

Arguments: seeds, methods ("+"-separated config names), noise ("+"-separated settings),
pretrain (below), batch_size, lr, decay_rate (per epoch), epochs; the last four default to the
synthetic recipe with 45 epochs and are passed to every run only where they differ from it;
dtype (auto | float32 | bfloat16, config.dtype of every run: compare the two on a GPU);
runlocal=true shrinks every run and the pretraining to the configs' smoke-test size (a script's
smoke run, not a benchmark).
recipe=paper runs every method (and the pretraining) at the papers' 224 px with a full-width
ResNet-18, and with each method's own batch size, lr and decay unless given here (and
different from the synthetic recipe's). The README's CE/EAC tables from the landmark start:

  # EAC's official batch size, 32 (twice the steps of the recipe's 64):
  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,pretrain=landmarks,batch_size=32 \
      --root runs/grid_synthetic_b32
  # EAC's official optimiser (batch 32, lr 2e-4 x0.9 per epoch, 60 epochs):
  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,pretrain=landmarks,batch_size=32,lr=2e-4,decay_rate=0.9,epochs=60 \
      --root runs/grid_synthetic_eac_recipe
  # the papers' recipe at 224 px, a GPU job:
  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac,pretrain=landmarks,recipe=paper,epochs=60 \
      --root runs/grid_synthetic_224 --jobs 6

Every method at 30% symmetric and 30% instance-dependent noise (docs/noise.md; the grid first
trains the clean CE run whose averaged predictions make the instance-dependent labels, then
every method on both), the table of the README and of docs/results.md "Instance-dependent noise":

  python -m fer_jax.grid --grid configs/grids/synthetic.py:methods=baseline+eac+ncct+lanet+scn+rul+nla+resup,noise=symmetric:0.3+instance:0.3 \
      --root runs/grid_synthetic_idn

Every method (both networks of ReSup) starts from the same expression-pretrained backbone with a
fresh head (configs/pretrain_expression.py, run once first: CE on 3,000 other synthetic faces
with their true labels; `init_head=False` keeps its backbone only, as the papers drop their face
network's classifier): the stand-in for the papers' MS-Celeb start, whose features already
separate the expressions (docs/design.md "Pretraining"). pretrain=landmarks starts from the
label-free landmark-regression stand-in instead, pretrain=identity from the face-recognition one
(configs/pretrain_identity.py); EAC does not beat CE from either:

  python -m fer_jax.grid --grid configs/grids/synthetic.py:pretrain=landmarks \
      --root runs/grid_synthetic_landmarks

Each run trains with the shared synthetic recipe (configs/common.py) on 1,000 training images for
45 epochs: the same compute as the recipe's 3,000 x 15, but long enough for cross-entropy to
memorise the wrong labels (from the expression start it peaks at 85% test accuracy by its fifth
epoch, then fits the noisy labels and ends near 68%), which is the regime the noisy-label
methods are built for. With 3,000 x 15 CE does not memorise (noisy train accuracy 63%, landmark
start) and the comparison says little.
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
  arg = common.parse_arg(arg, seeds=3, methods="baseline+eac+ncct+lanet+scn+rul+nla+resup",
                         noise="symmetric:0.3", epochs=45, recipe="auto", pretrain="expression",
                         dtype="auto", runlocal=False, **defaults)
  if arg.pretrain not in PRETRAININGS:
    raise ValueError(f"grid argument pretrain={arg.pretrain!r}: expected one of {PRETRAININGS}")
  if arg.recipe not in common.RECIPES:
    raise ValueError(f"grid argument recipe={arg.recipe!r}: expected one of {list(common.RECIPES)}")
  paper = arg.recipe == "paper"
  local = ",runlocal=true" if arg.runlocal else ""
  overrides = [("num_epochs", arg.epochs)] if arg.runlocal else [("dataset.num_train", 1000),
                                                                  ("num_epochs", arg.epochs)]
  overrides += [(field, arg[k]) for k, field in FIELDS.items() if arg[k] != defaults[k]]
  if arg.dtype != "auto":
    overrides.append(("dtype", arg.dtype))
  pretrain_arg = ",".join(["recipe=paper"] * paper + ["runlocal=true"] * arg.runlocal)
  if arg.pretrain == "expression":  # its 7-way head is dropped, as the papers drop their fc
    overrides.append(("init_head", False))
  return mlc.ConfigDict(dict(
    data=("synthetic,recipe=paper" if paper else "synthetic") + local,
    methods=tuple(arg.methods.split("+")),
    noise=tuple(arg.noise.split("+")),
    seeds=tuple(range(arg.seeds)),
    overrides=tuple(overrides),
    pretrain=f"pretrain_{arg.pretrain}" + (":" + pretrain_arg if pretrain_arg else ""),
    # ReSup's second network (ImageNet in the code) starts from the same pretraining.
    method_overrides=(("resup", (("resup.peer_init_from", "init_from"),)),),
  ))
