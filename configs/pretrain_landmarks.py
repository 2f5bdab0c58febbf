r"""Landmark-regression pretraining on other synthetic faces (fer_jax/methods/landmarks.py).

  python -m fer_jax.main --config configs/pretrain_landmarks.py --workdir runs/pretrain_landmarks
  # then, for any method on the synthetic data:
  python -m fer_jax.main --config configs/eac.py:synthetic,noise=0.3 \
      --config.init_from=runs/pretrain_landmarks/model --workdir runs/eac_syn30

The faces are drawn with dataset seed 1 (the expression runs use seed 0), and only their
landmarks are read; the network is the synthetic recipe's (72 px, quarter-width ResNet-18), or
with `:recipe=paper` the papers' (224 px, full width) for method runs with that argument.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, data="synthetic", recipe="auto", runlocal=False)
  c = common.base_config("landmarks", arg.data, recipe=arg.recipe, runlocal=arg.runlocal)
  c.dataset.seed = 1  # other faces than those the methods are trained and tested on
  if not arg.runlocal:
    common.pretraining_recipe(c, arg.recipe)
  c.input.train_ops = f"resize({c.input.image_size})|flip_lr|pad_crop(4)"
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
