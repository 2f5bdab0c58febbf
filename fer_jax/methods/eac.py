"""EAC, Erasing Attention Consistency (Zhang et al., ECCV 2022), as its official code trains.

Spec: ../shared/specs/eac.md. Per step, on a batch of erased views and their mirror images:
  1. two forward passes in train mode, the original view first; each is normalised with its
     own batch statistics and the running statistics are updated twice, the original view's
     first (never one concatenated batch). Here both run as one batched pass
     (`views.apply_views`) with exactly those semantics;
  2. cross-entropy on the original view only (the mirror's logits are unused);
  3. class activation maps of all classes from the last feature map and the *detached*
     classifier kernel (no bias, ReLU, normalisation or upsampling), the mirror's maps flipped
     back along the width;
  4. loss = CE + lam * mean squared difference of the two sets of maps (lam = 5).
Gradients of the consistency term reach the backbone through both passes, never the head.

The mirror view (`config.eac.second_view`), as the official code builds it:
  "mirror":  the flipped copy of the fully augmented original (same Gaussian noise, the erased
             box mirrored); built on the device. The code's path for the clean label list.
  "reflip":  the raw image flipped, then augmented on its own (its own erased box, no Gaussian
             noise): the host op pipeline writes it as `image_flip`. The code's path for the
             noisy label lists, i.e. the paper's noisy-label experiments.
The main view is never flipped at random and gets the Gaussian pixel noise with p 0.5.
"""

import jax
import jax.numpy as jnp
import optax

from fer_jax import cli
from fer_jax.methods import views
from fer_jax.models import resnet

SECOND_VIEWS = ("mirror", "reflip")


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype)


def class_activation_maps(features, kernel):
  """(N, H, W, K) maps of every class: features (N, H, W, C) weighted by the head kernel (C, K),
  which is detached so that no gradient reaches the classifier through the maps. Float32 at full
  precision, as the code's broadcast multiply and sum (no TF32, no bfloat16)."""
  return jnp.einsum("nhwc,ck->nhwk", features.astype(jnp.float32), jax.lax.stop_gradient(kernel),
                    precision=resnet.HEAD_PRECISION)


def attention_consistency(maps, mirror_maps):
  """Mean squared difference between `maps` and the mirror view's maps flipped back (width)."""
  return jnp.mean((maps - jnp.flip(mirror_maps, axis=2)) ** 2)


def second_view(batch, config):
  if config.eac.second_view == "mirror":
    return jnp.flip(batch["image"], axis=2)  # NHWC: axis 2 is the width
  if config.eac.second_view == "reflip":
    if "image_flip" not in batch:
      raise cli.UsageError("config.eac.second_view='reflip' needs `image_flip` from the train ops: "
                           "start config.input.train_ops with copy('image_flip')|flip_lr(p=1.0, "
                           "key='image_flip')")
    return batch["image_flip"]
  raise cli.UsageError(f"config.eac.second_view={config.eac.second_view!r}: expected one of "
                       f"{SECOND_VIEWS}")


def loss_fn(params, state, batch, rng, *, model, config):
  del rng
  ((logits, feats), (_, mirror_feats)), mutated = views.apply_views(
    model, {"params": params, "batch_stats": state.batch_stats},
    [batch["image"], second_view(batch, config)])
  kernel = params["head"]["kernel"]
  consistency = attention_consistency(class_activation_maps(feats["stage4"], kernel),
                                      class_activation_maps(mirror_feats["stage4"], kernel))
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  loss = ce + config.eac.lam * consistency
  return loss, {
    "batch_stats": mutated["batch_stats"],
    "extra": state.extra,
    "metrics": {"ce": ce, "attention_consistency": consistency},
    "logits": logits,
  }
