"""One real train.train_step from given variables: the JAX side of the PyTorch parity tests."""

import functools

import jax

from fer_jax import optim, train


def one_step(config, method, variables, batch):
  """Runs train.train_step once from `variables` (params, batch_stats) on `batch`.

  Returns:
    (new TrainState, metrics).
  """
  model = method.build_model(config)
  tx, lr_fns = optim.make(config.optimizer, 10, 100)
  num_train = len(batch["label"])
  state = train.create_state(config, model, tx, method, num_train, jax.random.key(0), None)
  state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                        opt_state=tx.init(variables["params"]))
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, method=method,
                                   config=config, lr_fn=lr_fns["default"]))
  return step(state, batch, jax.random.key(0))


def initial_state(config, method, num_train=16):
  """(model, TrainState) of `method` freshly initialised for `config`."""
  model = method.build_model(config)
  tx, _ = optim.make(config.optimizer, 4, 8)
  return model, train.create_state(config, model, tx, method, num_train, jax.random.key(0), None)
