r"""The synthetic comparison of the README: every method, 30% symmetric noise, three seeds.

  python -m fer_jax.grid --grid configs/grids/synthetic.py --root runs/grid_synthetic
  python -m fer_jax.grid --grid configs/grids/synthetic.py:seeds=1,methods=baseline+ncct  # smaller

Every method starts from the same label-free landmark-pretrained backbone (run once first)
and trains with the shared synthetic recipe (configs/common.py).
"""

import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, seeds=3, methods="baseline+eac+ncct+lanet+scn+rul",
                         noise="symmetric:0.3")
  return mlc.ConfigDict(dict(
    data="synthetic",
    methods=tuple(arg.methods.split("+")),
    noise=tuple(arg.noise.split("+")),
    seeds=tuple(range(arg.seeds)),
    overrides=(),
    pretrain="pretrain_landmarks",
  ))
