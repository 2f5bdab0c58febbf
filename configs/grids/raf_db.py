r"""The RAF-DB tables of the papers: every method at 10/20/30% symmetric noise, three seeds,
from the MS-Celeb ResNet-18 (`python -m fer_jax.convert`), each with its official recipe.

  python -m fer_jax.grid --grid configs/grids/raf_db.py:data_dir=/data/raf-basic,init_from=weights/msceleb_r18,landmarks=raf_train_19_landmarks.tensor,imagenet=weights/imagenet_r18 \
      --root runs/grid_raf

Arguments: data_dir (required), init_from (a converted backbone), landmarks (LA-Net's
training landmark file; LA-Net is left out without it), imagenet (torchvision's ImageNet
ResNet-18, converted: ReSup's second network; ReSup is left out without it), seeds (3), methods
(baseline+eac+ncct+lanet+scn+rul+nla+resup), noise ("+"-separated settings; "none" for clean,
"file:/data/raf-basic/EmoLabel/noise01.txt" for EAC's released lists).
"""

import ml_collections as mlc

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, data_dir="", init_from="", landmarks="", imagenet="", seeds=3,
                         methods="baseline+eac+ncct+lanet+scn+rul+nla+resup",
                         noise="symmetric:0.1+symmetric:0.2+symmetric:0.3")
  if not arg.data_dir:
    raise ValueError("configs/grids/raf_db.py needs data_dir=<your RAF-DB basic directory>")
  needs = {"lanet": arg.landmarks, "resup": arg.imagenet}
  methods = [m for m in arg.methods.split("+") if needs.get(m, True)]
  overrides = [("dataset.data_dir", arg.data_dir)]
  if arg.init_from:
    overrides.append(("init_from", arg.init_from))
  return mlc.ConfigDict(dict(
    data="raf_db",
    methods=tuple(methods),
    noise=tuple(arg.noise.split("+")),
    seeds=tuple(range(arg.seeds)),
    overrides=tuple(overrides),
    method_overrides=(("lanet", (("dataset.train_landmarks", arg.landmarks),)),
                      ("resup", (("resup.peer_init_from", arg.imagenet),))),
  ))
