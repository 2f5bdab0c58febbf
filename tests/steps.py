"""Real train.train_step programs for tests: one step from given variables (the JAX side of
the PyTorch parity tests), and a jitted step on chosen devices."""

import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fer_jax import optim, train
from fer_jax.data import device_ops


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


def sharded_step(config, devices, num_train=96, augment=False):
  """(initial TrainState, jitted train step, batch sharding) of config's method on `devices`;
  with `augment`, the step runs the config's train_ops on the devices (raw batches in).

  Tests that call it with the same config and device count compile the same programs, so
  all but the first load them from the persistent compile cache (conftest.py).
  """
  mesh = train.create_mesh(devices)
  replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  method = train.get_method(config)
  model = method.build_model(config)
  tx, lr_fns = optim.make(config.optimizer, 10, 100)
  state = train.create_state(config, model, tx, method, num_train, jax.random.key(0), replicated)
  ops = device_ops.parse(config.input.train_ops) if augment else None
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, method=method,
                                   config=config, lr_fn=lr_fns["default"], augment=ops))
  return state, step, data
