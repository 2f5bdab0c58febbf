"""Plain cross-entropy on the given (possibly noisy) labels, or on label distributions
where a dataset gives them: the baseline.

With config.ce.record_train_probabilities, the run also keeps, in state.extra, the running mean
over its epochs of every training sample's softmax (eval mode, the training augmentation, after
each epoch: the trainer's end-of-epoch pass, fer_jax/epoch_pass.py), and writes it to
<workdir>/train_probabilities.npz when it finishes (`write_outputs`): the model the
instance-dependent noise protocol reads (fer_jax/data/label_noise.py, kind "instance").
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fer_jax import schedule
from fer_jax.data import label_noise
from fer_jax.models import resnet


def build_model(config):
  m, dtype = config.model, resnet.compute_dtype(config.dtype)
  return resnet.Classifier(m.arch, m.num_classes, m.width, dtype)


def _recording(config):
  return bool(config.ce.get("record_train_probabilities", False))


def init_extra(config, num_train, rng, variables):
  del rng, variables
  if not _recording(config):
    return {}
  return {"steps_per_epoch": jnp.int32(schedule.epoch_steps(config, num_train)),
          "train_probabilities": jnp.zeros((num_train, config.model.num_classes), jnp.float32),
          "probability_epochs": jnp.int32(0)}


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


def runs_epoch_pass(config):
  return _recording(config)


def epoch_outputs(state, batch, *, model, config):
  """Eval-mode softmax of the augmented training batch (the code of Chen et al. predicts the
  training set with its training transform, after its test pass has set eval mode)."""
  del config
  logits, _ = model.apply(state.variables(), batch["image"], train=False)
  return {"probabilities": jax.nn.softmax(logits.astype(jnp.float32))}


def after_epoch(extra, outputs, config):
  """The running mean over the epochs so far: mean_e = mean_{e-1} + (p_e - mean_{e-1}) / e,
  in float64 on the host, kept as float32."""
  del config
  epochs = int(extra["probability_epochs"]) + 1
  before = np.asarray(extra["train_probabilities"], np.float64)
  mean = before + (np.asarray(outputs["probabilities"], np.float64) - before) / epochs
  return {"train_probabilities": mean.astype(np.float32),
          "probability_epochs": np.int32(epochs)}


def write_outputs(workdir, extra, dataset, config):
  """<workdir>/train_probabilities.npz (label_noise.PREDICTIONS_FILE) of a recording run."""
  if _recording(config):
    label_noise.write_train_probabilities(
      workdir, extra["train_probabilities"], int(extra["probability_epochs"]), dataset)
