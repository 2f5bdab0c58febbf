"""Optimisers and learning-rate schedules of the papers, built from `config.optimizer`."""

import re

import jax
import optax


def schedule(opt_config, lr, steps_per_epoch, total_steps):
  """The learning rate as a function of the step.

  exponential: lr * decay_rate**(epoch // decay_every_epochs), stepped at epoch ends (torch
    ExponentialLR, or StepLR with decay_every_epochs > 1).
  linear: lr to 0 over all steps, per step (LA-Net).
  constant: lr.
  """
  kind = opt_config.schedule
  if kind == "exponential":
    return optax.exponential_decay(lr, steps_per_epoch * opt_config.decay_every_epochs,
                                   opt_config.decay_rate, staircase=True)
  if kind == "linear":
    return optax.linear_schedule(lr, 0.0, total_steps)
  if kind == "constant":
    return optax.constant_schedule(lr)
  raise ValueError(
    f"config.optimizer.schedule={kind!r}: expected exponential, linear or constant"
  )


def _base(opt_config, lr_fn):
  c = opt_config
  if c.name == "adam":
    # torch.optim.Adam's weight_decay is L2 added to the gradient before the moments.
    return optax.chain(
      optax.add_decayed_weights(c.weight_decay),
      optax.scale_by_adam(c.b1, c.b2, c.eps),
      optax.scale_by_learning_rate(lr_fn),
    )
  if c.name == "adamw":
    return optax.adamw(lr_fn, c.b1, c.b2, c.eps, weight_decay=c.weight_decay)
  if c.name == "sgd":
    return optax.chain(
      optax.add_decayed_weights(c.weight_decay), optax.sgd(lr_fn, momentum=c.momentum)
    )
  raise ValueError(f"config.optimizer.name={c.name!r}: expected adam, adamw or sgd")


def param_group_labels(params, param_group_lrs):
  """Maps each parameter to the index of the first matching (regex, lr) group, or 'default'."""
  patterns = [re.compile(p) for p, _ in param_group_lrs]

  def label(path, _):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return next((str(i) for i, p in enumerate(patterns) if p.search(name)), "default")

  return jax.tree_util.tree_map_with_path(label, params)


def make(opt_config, steps_per_epoch, total_steps):
  """Returns (optax transformation, {group: lr schedule}).

  Each group of `opt_config.param_group_lrs` gets its own schedule with the same shape; the
  rest use `opt_config.lr`.
  """
  lrs = {"default": opt_config.lr}
  lrs.update({str(i): lr for i, (_, lr) in enumerate(opt_config.param_group_lrs)})
  schedules = {g: schedule(opt_config, lr, steps_per_epoch, total_steps) for g, lr in lrs.items()}
  tx = optax.multi_transform(
    {g: _base(opt_config, fn) for g, fn in schedules.items()},
    lambda params: param_group_labels(params, opt_config.param_group_lrs),
  )
  return tx, schedules
