"""Steps per epoch, the unit that the trainer, the learning-rate schedules and the methods that
count epochs (NCCTFER's stages, SCN's relabelling) share."""

import math


def epoch_steps(config, num_train):
  """Steps per epoch: with `input.drop_last` only full batches (LA-Net's loader), otherwise
  the last, partial batch of an epoch is completed from the next one."""
  if config.input.drop_last:
    return num_train // config.batch_size
  return math.ceil(num_train / config.batch_size)
