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
  after_update(state, config) -> state                       (optional)

A method reads its own fields from `config[config.method]` plus shared fields. The trainer never
tests a method's name.
"""
