"""Plain cross-entropy on the given (possibly noisy) labels, or on label distributions
where a dataset gives them: the baseline."""

import optax

from fer_jax.models import resnet


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype)


def loss_fn(params, state, batch, rng, *, model, config):
  del rng, config
  (logits, _), mutated = model.apply(
    {"params": params, "batch_stats": state.batch_stats},
    batch["image"],
    train=True,
    mutable=["batch_stats"],
  )
  if "soft_label" in batch:  # label distributions (FERPlus crossentropy/multi_target modes)
    loss = optax.softmax_cross_entropy(logits, batch["soft_label"]).mean()
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, {
    "batch_stats": mutated["batch_stats"],
    "extra": state.extra,
    "metrics": {"ce": loss},
    "logits": logits,
  }
