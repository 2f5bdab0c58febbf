"""Label-free pretraining: regress the 19 facial landmarks; no expression label is read.

The embedded synthetic dataset's stand-in for the face-pretrained backbones the papers start
from (MS-Celeb-1M identities, VGGFace2): a face task other than expression recognition, on
other faces (`configs/pretrain_landmarks.py` draws them with another seed). Its exported model
holds only the backbone, for `config.init_from`. The methods compared on the synthetic data
start from it, as the published ones start from a face-pretrained network; EAC's consistency
term in particular assumes features that already carry some structure (from scratch its
maps agree trivially and learning stalls; README "Results").

The model has no classifier: its logits are zeros, so the expression accuracy the trainer
logs for it is that of a constant guess.
"""

import jax.numpy as jnp

from fer_jax.models import resnet

NUM_LANDMARKS = 19


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype,
                           extra_heads=(("landmark_head", 2 * NUM_LANDMARKS),), classify=False)


def loss_fn(params, state, batch, rng, *, model, config):
  del rng, config
  images = batch["image"]
  (logits, feats), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats}, images, train=True,
    mutable=["batch_stats"])
  size = jnp.array(images.shape[2:0:-1], jnp.float32)  # (W, H): coordinates in [0, 1]
  points = feats["landmark_head"].reshape(-1, NUM_LANDMARKS, 2)
  loss = jnp.mean((points - batch["landmarks"] / size) ** 2)
  return loss, {"batch_stats": mutated["batch_stats"], "extra": state.extra,
                "metrics": {"landmark_mse": loss}, "logits": logits}
