r"""Supervised expression pretraining on other synthetic faces, clean labels: the synthetic
benchmark's stand-in for the papers' MS-Celeb start, a backbone whose features already separate
the expressions (on RAF-DB the official EAC run reaches 69.6% after one epoch; docs/design.md).

  python -m fer_jax.main --config configs/pretrain_expression.py --workdir runs/pretrain_expression
  # then, for any method on the synthetic data:
  python -m fer_jax.main --config configs/eac.py:synthetic,noise=0.3 \
      --config.init_from=runs/pretrain_expression/model --config.init_head=False \
      --workdir runs/eac_syn30

Cross-entropy on 3,000 faces drawn with dataset seed 1 (the benchmark's are seed 0), with their
true labels, the synthetic recipe and flips. `--config.init_head=False` keeps its backbone
with a fresh head, as the papers drop their face network's classifier and as the grid
(configs/grids/synthetic.py) starts every method; without that flag the trained head is loaded
too.
"""

from configs import baseline, common


def get_config(arg=None):
  arg = common.parse_arg(arg, recipe="auto", runlocal=False)
  c = baseline.get_config(f"synthetic,recipe={arg.recipe},runlocal={arg.runlocal}")
  c.dataset.seed = 1  # other faces than those the methods are trained and tested on
  if not arg.runlocal:
    common.pretraining_recipe(c, arg.recipe)
  c.input.train_ops = f"resize({c.input.image_size})|flip_lr|pad_crop(4)"
  return c
