"""NCCTFER: the toy checks of ncct_scn_rul.md §8, gradient paths, warm-up, a tiny run."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ncct as ncct_config
from fer_jax import expressions, train
from fer_jax.data import label_noise, sources
from fer_jax.methods import ncct

TOY_PROBS = jnp.array([[.9, .05, .05], [.3, .6, .1], [.2, .7, .1], [.5, .2, .3]])
TOY_LABELS = jnp.array([0, 0, 1, 2])


def test_thresholds_and_confident_sets_on_the_spec_toy_batch():
  sure, t = ncct.confident(TOY_PROBS, TOY_LABELS, "clamped_batch_mean")
  np.testing.assert_allclose(t, [0.4625, 0.4875, 0.35], atol=1e-6)
  # Sample 3 is confident by the tie 0.35 == 0.35; sample 1 is not.
  assert sure.tolist() == [True, False, True, True]
  sure, t = ncct.confident(TOY_PROBS, TOY_LABELS, "batch_mean")  # DNFER: no clamp
  np.testing.assert_allclose(t, [0.475, 0.3875, 0.1375], atol=1e-6)
  assert sure.tolist() == [True, False, True, True]
  _, t = ncct.confident(TOY_PROBS, TOY_LABELS, "class_mean")  # the paper's text
  np.testing.assert_allclose(t, [0.6, 0.7, 0.3], atol=1e-6)


@pytest.mark.parametrize("batch", [32, 64, 128])
def test_a_class_below_the_clamp_everywhere_stays_confident(batch):
  # Class 2 never exceeds 0.35: its threshold is exactly 0.35 and every sample labelled 2 ties
  # with it, so all of them keep their CE (a rounded-up float32 mean dropped them all).
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), batch).astype(np.float32)
  probs[:, 2] = rng.uniform(0.0, 0.3, batch)
  labels = jnp.asarray(rng.integers(0, 3, batch))
  sure, t = ncct.confident(jnp.asarray(probs), labels, "clamped_batch_mean")
  assert float(t[2]) == np.float32(0.35)
  assert bool(sure[labels == 2].all()) and int((labels == 2).sum()) > 0


def test_mask_and_consistency_values():
  p = jnp.array([[.30, .05, .20, .10, .15, .12, .08]])
  np.testing.assert_array_equal(ncct.least_probable_mask(p, 4), [[0, 1, 0, 1, 0, 1, 1]])
  # Distinct probabilities: the official <= cut keeps the same k classes.
  np.testing.assert_array_equal(ncct.least_probable_mask(p, 4, ties="official"),
                                [[0, 1, 0, 1, 0, 1, 1]])
  # An exact tie at the cut: exactly k by default, every tied class with the official rule.
  tied = jnp.array([[.30, .05, .20, .10, .15, .10, .10]])
  assert float(ncct.least_probable_mask(tied, 3).sum()) == 3
  np.testing.assert_array_equal(ncct.least_probable_mask(tied, 3, ties="official"),
                                [[0, 1, 0, 1, 0, 1, 1]])
  weak = jnp.log(p)
  strong = jax.random.normal(jax.random.key(0), (1, 7))
  expected = -jnp.sum(jnp.array([0, 1, 0, 1, 0, 1, 1]) * p * jax.nn.log_softmax(strong))
  got = ncct.masked_consistency(weak, strong, jnp.array([True]), 4, "k_smallest", "weak")
  assert float(got) == pytest.approx(float(expected), rel=1e-5)
  none = ncct.masked_consistency(weak, strong, jnp.array([False]), 4, "k_smallest", "weak")
  assert float(none) == 0.0  # no non-confident sample: no consistency term
  # The code's gradient path: through the weak view's P, never the strong view's logits.
  grad_weak, grad_strong = jax.grad(
    lambda w, s: ncct.masked_consistency(w, s, jnp.array([True]), 4, "k_smallest", "weak"),
    argnums=(0, 1))(weak, strong)
  assert jnp.abs(grad_weak).max() > 0 and jnp.abs(grad_strong).max() == 0
  grad_strong = jax.grad(lambda s: ncct.masked_consistency(
    weak, s, jnp.array([True]), 4, "k_smallest", "strong"))(strong)
  assert jnp.abs(grad_strong).max() > 0


def test_confident_ce_sums_and_falls_back_to_the_mean():
  logits = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
  labels = jnp.array([0, 0, 0])
  ce = np.asarray(jax.vmap(lambda z, y: -jax.nn.log_softmax(z)[y])(logits, labels))
  assert float(ncct._confident_ce(logits, labels, jnp.array([True, True, False]), "sum")) == (
    pytest.approx(ce[0] + ce[1]))
  assert float(ncct._confident_ce(logits, labels, jnp.zeros(3, bool), "sum")) == (
    pytest.approx(ce.mean()))


def _state_and_batch(config, step):
  model = ncct.build_model(config)
  x = jax.random.normal(jax.random.key(1), (8, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  state = types.SimpleNamespace(batch_stats=variables["batch_stats"], step=jnp.int32(step),
                                extra={"steps_per_epoch": jnp.int32(10)})
  batch = {"image": x, "image_strong": x[:, ::-1], "label": jnp.arange(8) % 7,
           "clean_label": jnp.zeros(8, jnp.int32)}
  return model, variables["params"], state, batch


def test_warmup_then_robust_stage_and_negative_head_training():
  config = ncct_config.get_config("synthetic,runlocal=true")
  model, params, state, batch = _state_and_batch(config, step=39)  # epoch 3 < 4: warm-up

  def negative_head_grads():  # of that head alone: no backward pass through the backbone
    def loss(head):
      return ncct.loss_fn({**params, "negative_head": head}, state, batch, jax.random.key(2),
                          model=model, config=config)[0]
    return jax.grad(loss)(params["negative_head"])

  loss, aux = ncct.loss_fn(params, state, batch, jax.random.key(2), model=model, config=config)
  m = aux["metrics"]
  assert float(loss) == pytest.approx(0.5 * float(m["ce_weak"] + m["ce_strong"]), rel=1e-6)
  assert max(jnp.abs(g).max() for g in jax.tree.leaves(negative_head_grads())) == 0
  state.step = jnp.int32(40)  # epoch 4: the robust stage
  loss, aux = ncct.loss_fn(params, state, batch, jax.random.key(2), model=model, config=config)
  m = aux["metrics"]
  assert float(loss) == pytest.approx(float(m["positive_loss"] + m["negative_loss"]), rel=1e-6)
  assert max(jnp.abs(g).max() for g in jax.tree.leaves(negative_head_grads())) > 0
  assert 0 <= float(m["detect_recall"]) <= 1 and "threshold_6" in m


def test_every_dataset_trains_in_affectnet_order():
  config = ncct_config.get_config("synthetic,runlocal=true")
  assert config.dataset.class_order == "affectnet"
  labels = np.arange(7, dtype=np.int32)
  split = sources.LabelledSource(sources.ArrayStore(np.zeros((7, 2, 2, 3), np.uint8)), labels,
                                 tuple(map(str, labels)))
  raf = sources.Dataset("raf", expressions.RAF_DB, split, split)
  moved = sources.reorder(raf, expressions.AFFECTNET[:7])
  # RAF (0-based) -> AffectNet: {0->3, 1->4, 2->5, 3->1, 4->2, 5->6, 6->0} (spec §1.1).
  assert moved.train.labels.tolist() == [3, 4, 5, 1, 2, 6, 0]
  assert moved.class_names == expressions.AFFECTNET[:7]


def test_tiny_run_exports_only_the_positive_classifier(tmp_path):
  config = ncct_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path / "cache")
  config.progress_bar = False
  config.ncct.warmup_epochs = 1
  summary = train.train_and_evaluate(config, tmp_path / "run")
  assert len(summary["history"]) == 2 and summary["noise"]["kind"] == "symmetric"
  from fer_jax.models import weights

  variables, meta = weights.load(tmp_path / "run/model")
  assert set(variables["params"]) == {"backbone", "head"}
  assert meta["class_names"] == list(expressions.AFFECTNET[:7])
  logged = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  assert any("train_detect_precision" in x and "train_confident_weak" in x for x in logged)


def test_noise_is_drawn_before_the_class_reorder(tmp_path):
  """NCCTFER's AffectNet order must not change which noisy labels a seed gives."""
  import ml_collections

  config = ncct_config.get_config("synthetic,noise=0.3,runlocal=true")
  config.dataset.cache_dir = str(tmp_path)
  own = sources.load(config.dataset)
  noisy, _ = label_noise.apply(own, ml_collections.ConfigDict(config.noise.to_dict()))
  moved = sources.in_class_order(noisy, config.dataset)
  names = [moved.class_names[i] for i in moved.train.labels]
  assert names == [own.class_names[i] for i in noisy.train.labels]
  assert (moved.train.labels != moved.train.clean_labels).mean() > 0.2


def test_one_robust_step_matches_pytorch():
  """The official robust-stage step restated in PyTorch (clamped batch-mean thresholds per view,
  summed CE on confident samples, k-least-probable masked consistency with the strong view's
  negative logits detached as the code's copy.copy does) vs train.train_step, on a small R18."""
  import functools

  torch = pytest.importorskip("torch")
  from fer_jax.data import pipeline
  from fer_jax.models import torch_convert
  from tests import steps, torch_resnet

  ref = torch_resnet.make("resnet18", 7, width=8).train()
  negative = torch.nn.Linear(64, 7)
  with torch.no_grad():  # peaked probabilities, so that some samples fall below the thresholds
    ref.fc.weight.mul_(30.0)
  weak = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
  strong = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 5, 6, 0], np.int32)
  before = {k: v.clone() for k, v in ref.state_dict().items()}
  variables, _ = torch_convert.torch_to_flax(
    torch_convert.find_state_dict(before, "ref"), 7, "ref")
  variables["params"]["negative_head"] = {"kernel": negative.weight.detach().numpy().T.copy(),
                                          "bias": negative.bias.detach().numpy().copy()}
  params = [*ref.parameters(), *negative.parameters()]
  opt = torch.optim.SGD(params, lr=0.1)

  def forward(x):
    h = ref.maxpool(torch.relu(ref.bn1(ref.conv1(torch.tensor(x.transpose(0, 3, 1, 2))))))
    for i in range(1, 5):
      h = getattr(ref, f"layer{i}")(h)
    h = h.mean((2, 3))
    return ref.fc(h), negative(h)

  y = torch.tensor(labels, dtype=torch.long)

  def confident_ce(logits):
    q = torch.softmax(logits, 1).clamp(0.35, 0.65)
    sure = q[torch.arange(8), y] >= q.mean(0)[y]
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return (ce[sure].sum() if sure.any() else ce.mean()), sure

  pos_w, neg_w = forward(weak)
  pos_s, neg_s = forward(strong)
  ce_w, sure = confident_ce(pos_w)
  ce_s, _ = confident_ce(pos_s)
  p = torch.softmax(neg_w[~sure], 1)
  log_q = torch.log_softmax(neg_s[~sure].detach(), 1)
  mask = torch.zeros_like(p).scatter_(1, torch.topk(p, 4, largest=False).indices, 1.0)
  consistency = -(mask * p * log_q).sum(1).mean()
  loss = 0.5 * (ce_w + ce_s) + consistency
  loss.backward()
  opt.step()

  config = ncct_config.get_config("synthetic,runlocal=true")
  config.model.width = 8
  config.ncct.warmup_epochs = 0
  config.optimizer.update(dict(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0,
                               param_group_lrs=(), schedule="constant"))
  to_pixels = lambda x: (x * pipeline.IMAGENET_STD + pipeline.IMAGENET_MEAN) * 255  # noqa: E731
  new, metrics = steps.one_step(config, ncct, variables, {
    "image": to_pixels(weak), "image_strong": to_pixels(strong), "label": labels})
  assert 0 < int((~sure).sum()) < 8  # both the CE and the consistency terms are exercised
  assert float(metrics["loss"]) == pytest.approx(loss.item(), rel=1e-4)
  assert float(metrics["negative_loss"]) == pytest.approx(consistency.item(), rel=1e-4)
  after = {k: v.clone() for k, v in ref.state_dict().items()}
  expected, _ = torch_convert.torch_to_flax(
    torch_convert.find_state_dict(after, "ref"), 7, "ref")
  expected["params"]["negative_head"] = {"kernel": negative.weight.detach().numpy().T}

  def update(tree, *path):  # the SGD step each side took: -lr * gradient
    return functools.reduce(lambda t, k: t[k], path, tree) - functools.reduce(
      lambda t, k: t[k], path, variables["params"])

  for path in (("head", "kernel"), ("negative_head", "kernel"), ("backbone", "conv1", "kernel"),
               ("backbone", "layer4_1", "conv2", "kernel")):
    want = update(expected["params"], *path)
    np.testing.assert_allclose(update(new.params, *path), want, rtol=1e-3,
                               atol=1e-4 * np.abs(want).max(), err_msg=str(path))
