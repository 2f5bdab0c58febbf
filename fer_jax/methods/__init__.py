"""Training methods. `config.method = "<name>"` selects `fer_jax.methods.<name>`.

A method module exports:

  build_model(config) -> nn.Module
      `model.apply(variables, images, train=...)` returns `(logits, features)`.
  loss_fn(params, state, batch, rng, *, model, config) -> (loss, aux)
      `batch` holds normalised float images plus `label`, `index` and whatever the method's
      host ops added; `aux` = {"batch_stats", "extra", "metrics": {name: scalar}, "logits"}.
  init_extra(config, num_train, rng, variables) -> pytree   (optional; default: {})
      Per-sample or teacher state kept in `TrainState.extra` (`variables`: the initial
      model variables, after `config.init_from`).
  adapt_pretrained(variables, loaded) -> variables            (optional)
      Fills method-specific parameters from a loaded checkpoint (e.g. LA-Net's landmark
      branch from the converted ResNet's layers 2-4).
  init_variables(config, variables) -> variables             (optional)
      Loads what the method initialises from files of its own, after `config.init_from`
      (ReSup's second network from config.resup.peer_init_from).
  after_update(state, config) -> state                       (optional)
  epoch_outputs(state, batch, *, model, config) -> {name: (B, ...)}   (optional, with
  after_epoch(extra, outputs, config) -> {key: array}                  both)
      An end-of-epoch pass over the training set (fer_jax/epoch_pass.py): per-sample outputs
      of the augmented training batches, then, on the host, the state.extra entries they
      replace (ReSup's weight tables). `runs_epoch_pass(config) -> bool` (optional) turns it
      off for a config.
  write_outputs(workdir, extra, dataset, config)              (optional)
      Files of the method's own, written at the end of training.

A method reads its own fields from `config[config.method]` plus shared fields. The trainer never
tests a method's name.
"""
