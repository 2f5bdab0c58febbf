r"""Measures why EAC stalls on the synthetic data (docs/design.md, "Synthetic default recipe").

  # the first steps of EAC (30% symmetric noise, synthetic recipe) from a pretrained backbone:
  python scripts/eac_probe.py steps --init_from runs/pretrain_landmarks/model [--lam 5] [--lr 1e-3]
  # how far from flip-equivariant the layer-4 maps of models are ("random" = a fresh init):
  python scripts/eac_probe.py equivariance random runs/pretrain_landmarks/model runs/x/model

`steps` prints, every 10 steps, the step's CE and consistency and, on 256 test images in eval
mode: the mean layer-4 activation, the spread of its spatial mean across images, and the
spread of the logits across images. `equivariance` prints, per model, the mean squared
difference between the layer-4 maps of the test images and the flipped-back maps of their
mirror images, divided by the maps' variance over images and positions.
"""

import functools
import sys

import jax
import jax.numpy as jnp
from absl import app, flags

sys.path.insert(0, ".")  # run from the repository root: configs/ is not a package on the path

from configs import eac as eac_config  # noqa: E402
from fer_jax import optim, schedule, train  # noqa: E402
from fer_jax.data import device_ops, label_noise, pipeline, sources  # noqa: E402
from fer_jax.methods import eac  # noqa: E402
from fer_jax.models import weights  # noqa: E402


def setup(init_from="", lam=5.0, lr=1e-3, view="auto"):
  config = eac_config.get_config(f"synthetic,noise=0.3,view={view}")
  config.init_from, config.eac.lam, config.optimizer.lr = init_from, lam, lr
  dataset, _ = label_noise.apply(sources.load(config.dataset), config.noise, None)
  test = next(pipeline.eval_batches(dataset.test, config.input.eval_ops, 256))
  return config, dataset, test


def steps(f):
  config, dataset, test = setup(f.init_from, f.lam, f.lr, f.view)
  model = eac.build_model(config)
  steps_per_epoch = schedule.epoch_steps(config, len(dataset.train))
  tx, lr_fns = optim.make(config.optimizer, steps_per_epoch, steps_per_epoch * config.num_epochs)
  state = train.create_state(config, model, tx, eac, len(dataset.train), jax.random.key(0), None)
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, method=eac,
                                   config=config, lr_fn=lr_fns["default"],
                                   augment=device_ops.parse(config.input.train_ops)))
  batches = iter(pipeline.train_dataset(dataset.train, "", batch_size=config.batch_size, seed=0,
                                        num_threads=2))

  @jax.jit
  def probe(state):
    x = pipeline.to_model_input({"image": test["image"]})["image"]
    logits, feats = model.apply(state.variables(), x, train=False)
    f4 = feats["stage4"]
    return {"feature_mean": f4.mean(), "feature_spread": f4.mean((1, 2)).std(0).mean(),
            "logit_spread": logits.std(0).mean()}

  for i in range(f.steps + 1):
    seen = {k: round(float(v), 4) for k, v in probe(state).items()} if i % 10 == 0 else None
    state, metrics = step(state, next(batches), jax.random.key(1))
    if seen:  # the model before step i, and step i's losses
      print(i, {"ce": round(float(metrics["ce"]), 4),
                "consistency": round(float(metrics["attention_consistency"]), 4), **seen})


def equivariance(models):
  config, _, test = setup()
  model = eac.build_model(config)
  x = pipeline.to_model_input({"image": test["image"]})["image"]
  init = model.init(jax.random.key(0), x[:1])
  for source in models:
    variables = init if source == "random" else weights.merge(
      init, weights.load(source)[0], source=source)
    maps = lambda images: model.apply(variables, images, train=False)[1]["stage4"]  # noqa: E731,B023
    direct, mirrored = maps(x), jnp.flip(maps(jnp.flip(x, 2)), 2)
    variance = jnp.mean((direct - direct.mean((0, 1, 2))) ** 2)
    print(f"{source}: flip error / variance = {float(jnp.mean((direct - mirrored) ** 2) / variance):.3f}")


def main(argv):
  if len(argv) < 2 or argv[1] not in ("steps", "equivariance"):
    raise app.UsageError("first argument: steps | equivariance")
  if argv[1] == "steps":
    steps(flags.FLAGS)
  else:
    equivariance(argv[2:])


if __name__ == "__main__":
  flags.DEFINE_string("init_from", "", "Backbone to start from (steps).")
  flags.DEFINE_float("lam", 5.0, "EAC's consistency weight (steps).")
  flags.DEFINE_float("lr", 1e-3, "Learning rate (steps).")
  flags.DEFINE_string("view", "auto", "EAC's second view: auto | mirror | reflip (steps).")
  flags.DEFINE_integer("steps", 60, "Steps to run (steps).")
  app.run(main)
