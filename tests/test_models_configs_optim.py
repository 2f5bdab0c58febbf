"""Model shapes and counts (eac.md §8), configs, and the optimiser against torch.optim.Adam."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from fer_jax import optim
from fer_jax.models import resnet

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arch,backbone,total,channels", [
  ("resnet18", 11_176_512, 11_180_103, 512), ("resnet50", 23_508_032, 23_522_375, 2048)])
def test_parameter_counts_and_feature_shapes(arch, backbone, total, channels):
  model = resnet.Classifier(arch, 7)
  x = jnp.zeros((2, 224, 224, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  count = lambda t: sum(v.size for v in jax.tree.leaves(t))  # noqa: E731
  assert count(variables["params"]["backbone"]) == backbone
  assert count(variables["params"]) == total
  logits, feats = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 7)
  sizes = [feats[f"stage{i}"].shape[1] for i in range(1, 5)]
  assert sizes == [56, 28, 14, 7] and feats["stage4"].shape[-1] == channels
  assert feats["pre_logits"].shape == (2, channels)


def test_every_config_builds_and_its_method_imports():
  for path in sorted((ROOT / "configs").glob("*.py")):
    if path.stem in ("common", "__init__"):
      continue
    module = importlib.import_module(f"configs.{path.stem}")
    for arg in (None, "runlocal=true"):
      config = module.get_config(arg)
      method = importlib.import_module(f"fer_jax.methods.{config.method}")
      assert hasattr(method, "build_model") and hasattr(method, "loss_fn")
      assert config.input.train_ops and config.input.eval_ops
    # recipe=paper: the paper's network and resolution on the synthetic faces, whose train
    # transform resizes to that resolution (the synthetic recipe's would be 72 px, width 16).
    paper = module.get_config("recipe=paper")
    assert (paper.input.image_size, paper.model.width) == (224, 64)
    assert "resize(224" in paper.input.train_ops and paper.dataset.image_size == 128


def test_config_arguments_are_checked():
  assert common.parse_arg("synthetic,runlocal=true", data="x", runlocal=False).runlocal is True
  with pytest.raises(ValueError, match="'nois'.*expected one of"):
    common.parse_arg("nois=0.1", data="x", noise=0.0)
  with pytest.raises(ValueError, match="data='rafdb'"):
    common.dataset_config("rafdb")
  with pytest.raises(ValueError, match="recipe='papers'"):
    common.base_config("ce", recipe="papers")


def _opt_config(**kw):
  from configs import baseline

  c = baseline.get_config().optimizer
  c.update(kw)
  return c


def test_exponential_schedule_matches_eac_values():
  # eac.md §8: R50 lr 1e-4, 384 steps per epoch; epochs 1, 2, 60 run at 1e-4, 9e-5, 1.9967e-7.
  fn = optim.schedule(_opt_config(schedule="exponential", decay_rate=0.9), 1e-4, 384, 384 * 60)
  for epoch, lr in ((1, 1e-4), (2, 9e-5), (60, 1.9967e-7)):
    for step in ((epoch - 1) * 384, epoch * 384 - 1):
      np.testing.assert_allclose(fn(step), lr, rtol=1e-4)
  linear = optim.schedule(_opt_config(schedule="linear"), 1e-3, 10, 100)
  np.testing.assert_allclose([linear(0), linear(50), linear(100)], [1e-3, 5e-4, 0.0], atol=1e-9)


def test_adam_with_coupled_l2_matches_torch_and_groups_get_their_own_lr():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  params = {"backbone": {"w": rng.normal(size=(5,)).astype(np.float32)},
            "head": {"w": rng.normal(size=(3,)).astype(np.float32)}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(3)]
  c = _opt_config(lr=1e-3, weight_decay=1e-2, schedule="constant",
                  param_group_lrs=(("^head/", 1e-2),))
  tx, _ = optim.make(c, 10, 100)
  state, p = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)
  tp = {k: torch.tensor(params[k]["w"], requires_grad=True) for k in params}
  opt = torch.optim.Adam([{"params": [tp["backbone"]], "lr": 1e-3},
                          {"params": [tp["head"]], "lr": 1e-2}], weight_decay=1e-2)
  for g in grads:
    for k in tp:
      tp[k].grad = torch.tensor(g[k]["w"])
    opt.step()
  for k in tp:
    np.testing.assert_allclose(p[k]["w"], tp[k].detach().numpy(), rtol=1e-5, atol=1e-7)


def test_unknown_optimizer_and_schedule_are_named():
  with pytest.raises(ValueError, match="config.optimizer.name='lamb'"):
    optim.make(_opt_config(name="lamb"), 10, 100)[0].init({"w": jnp.zeros(2)})
  with pytest.raises(ValueError, match="config.optimizer.schedule='cosine'"):
    optim.make(_opt_config(schedule="cosine"), 10, 100)



def test_init_from_puts_a_loaded_head_in_the_runs_class_order(tmp_path):
  """A model trained in RAF-DB order that starts an AffectNet-order run (NCCTFER's remap)
  scores each class with that class's weights; one trained on other classes, or
  init_head=False, leaves the run's fresh head."""
  from configs import baseline
  from fer_jax import expressions, train
  from fer_jax.methods import ce
  from fer_jax.models import weights

  config = baseline.get_config("runlocal=true")
  model = ce.build_model(config)
  tx = optim.make(config.optimizer, 10, 100)[0]
  fresh = train.create_state(config, model, tx, ce, 10, jax.random.key(0), None)
  kernel = np.tile(np.arange(7, dtype=np.float32), (fresh.params["head"]["kernel"].shape[0], 1))
  params = {**fresh.params, "head": {"kernel": kernel, "bias": np.arange(7, dtype=np.float32)}}
  meta = {"class_names": list(expressions.RAF_DB)}
  weights.save(tmp_path / "m", {"params": params, "batch_stats": fresh.batch_stats}, meta)
  config.init_from = str(tmp_path / "m")

  affectnet7 = expressions.AFFECTNET[:7]
  state = train.create_state(config, model, tx, ce, 10, jax.random.key(0), None, affectnet7)
  expected = [expressions.RAF_DB.index(name) for name in affectnet7]  # happiness -> RAF index 3
  np.testing.assert_array_equal(state.params["head"]["bias"], expected)
  np.testing.assert_array_equal(state.params["head"]["kernel"][5], expected)

  state = train.create_state(config, model, tx, ce, 10, jax.random.key(0), None,
                             [f"class{k}" for k in range(7)])
  np.testing.assert_array_equal(state.params["head"]["kernel"], fresh.params["head"]["kernel"])

  config.init_head = False  # the papers' start: the backbone alone, whatever the classes
  state = train.create_state(config, model, tx, ce, 10, jax.random.key(0), None, expressions.RAF_DB)
  np.testing.assert_array_equal(state.params["head"]["bias"], fresh.params["head"]["bias"])
