r"""Face-recognition pretraining on synthetic people: the stand-in for the MS-Celeb-1M and
VGGFace2 backbones that the papers start from (fer_jax/data/synthetic.py, task=identity).

  python -m fer_jax.main --config configs/pretrain_identity.py --workdir runs/pretrain_identity
  # then, for any method on the synthetic data:
  python -m fer_jax.main --config configs/eac.py:synthetic,noise=0.3 \
      --config.init_from=runs/pretrain_identity/model --workdir runs/eac_syn30

Cross-entropy over `people` identities (default 300), 20 images each, seen with random
expressions, poses, lighting and occlusions; flips, as face-recognition training uses. The
faces are drawn with dataset seed 1 (the expression runs use seed 0) and no expression label is
read. The network is the synthetic recipe's (72 px, quarter-width ResNet-18), or with
`:recipe=paper` the papers' (224 px, full width). Only the backbone carries over: the head's
class count differs from the expression runs'.
"""

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, people=300, per_person=20, recipe="auto", runlocal=False)
  c = common.base_config("ce", "synthetic", recipe=arg.recipe, runlocal=arg.runlocal)
  c.ce = {}
  c.dataset.update(dict(seed=1, task="identity", num_identities=arg.people,
                        num_train=arg.people * arg.per_person, num_test=arg.people * 2))
  c.model.num_classes = arg.people
  if arg.runlocal:
    c.dataset.update(dict(num_identities=8, num_train=64, num_test=16))
    c.model.num_classes = 8
  else:
    common.pretraining_recipe(c, arg.recipe)
  c.input.train_ops = f"resize({c.input.image_size})|flip_lr|pad_crop(4)"
  c.input.eval_ops = common.eval_ops(c.input.image_size)
  return c
