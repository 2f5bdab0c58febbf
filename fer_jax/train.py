"""The training loop: one jitted pure step, data-parallel over every device, orbax resume.

Data parallelism is `jax.jit` over a 1-D mesh ("data",): batches are sharded along their
first axis, the state is replicated. Under jit the batch is one global array, so BatchNorm
statistics are computed over the global batch with no collective in the model.
"""

import functools
import importlib
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from clu import parameter_overview
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fer_jax import checkpoint, cli, epoch_pass, optim, schedule, writers
from fer_jax.data import device_ops, feed, label_noise, pipeline, sources
from fer_jax.models import resnet, weights
from fer_jax.state import TrainState


class Interrupted(KeyboardInterrupt):
  """Ctrl-C during training; the message says where the run stopped and what it kept."""


# Fields that may change when a run resumes; any other change needs a new workdir.
_RESUMABLE_CHANGES = (
  "num_epochs", "progress_bar", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
  "input.num_threads", "input.num_workers", "input.placement", "input.device_budget",
)


def get_method(config):
  """The module of `config.method`: one of fer_jax/methods that defines a loss_fn."""
  cli.check_name(config.method, cli.module_names("fer_jax.methods", "loss_fn"), "config.method")
  return importlib.import_module(f"fer_jax.methods.{config.method}")


def create_mesh(devices=None):
  """A 1-D ("data",) mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.array(devices), ("data",),
                           axis_types=(jax.sharding.AxisType.Auto,))


def train_step(state, batch, rng, *, model, tx, method, config, lr_fn, augment=None):
  """One optimisation step: `(state, batch, rng) -> (state, metrics)`, pure.

  `augment` (a device_ops pipeline) turns the batch's raw uint8 images into the augmented
  views, with keys drawn from the step's rng; None takes the images as they are.
  """
  rng = jax.random.fold_in(rng, state.step)
  if augment is not None:
    augment_rng, rng = jax.random.split(rng)
    batch = augment(batch, augment_rng)
  batch = pipeline.to_model_input(batch, *pipeline.statistics(config.input),
                                  dtype=jnp.dtype(resnet.compute_dtype(config.dtype)))
  grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)
  (loss, aux), grads = grad_fn(state.params, state, batch, rng, model=model, config=config)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    opt_state=opt_state,
    batch_stats=aux["batch_stats"],
    extra=aux["extra"],
  )
  if hasattr(method, "after_update"):
    new_state = method.after_update(new_state, config)
  metrics = {
    "loss": loss,
    "accuracy": jnp.mean(jnp.argmax(aux["logits"], -1) == batch["label"]),
    "lr": lr_fn(state.step),
    "grad_norm": optax.tree.norm(grads),
    "param_norm": optax.tree.norm(state.params),
    **aux["metrics"],
  }
  return new_state, metrics


def eval_step(state, batch, *, model, num_classes, dtype, preprocess=None,
              statistics=(pipeline.IMAGENET_MEAN, pipeline.IMAGENET_STD)):
  """Confusion-matrix counts and summed CE of the real (unmasked) examples of a batch, after
  `preprocess` (the device_ops eval pipeline, deterministic) if given, normalised with the
  (mean, std) `statistics`."""
  if preprocess is not None:
    batch = preprocess(batch, jax.random.key(0))
  x = pipeline.to_model_input(batch, *statistics, dtype=dtype)["image"]
  logits, _ = model.apply(state.variables(), x, train=False)
  mask = batch["_mask"].astype(jnp.int32)
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32)
  confusion = confusion.at[batch["label"], jnp.argmax(logits, -1)].add(mask)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return confusion, jnp.sum(ce * mask)


def evaluate(eval_fn, state, inputs, config):
  """Returns (confusion matrix, mean CE) over every example of the test split of `inputs`
  (a feed.Feed)."""
  confusion, loss_sum = 0, 0.0
  for batch in inputs.eval_batches(config.eval_batch_size):
    c, loss = eval_fn(state, batch)
    confusion, loss_sum = confusion + c, loss_sum + loss
  return np.asarray(jax.device_get(confusion)), float(loss_sum) / len(inputs.dataset.test)


def create_state(config, model, tx, method, num_train, rng, replicated, class_names=None):
  """Initialises (or loads `config.init_from` into) a replicated TrainState.

  `class_names`, the run's classes in the model's order: a loaded head is put in that order
  (weights.align_heads); None takes a head of the right shape as it is.
  """
  init_rng, extra_rng = jax.random.split(rng)
  size = config.input.image_size
  dummy = jnp.zeros((1, size, size, 3), jnp.dtype(resnet.compute_dtype(config.dtype)))
  # The classic Threefry: XLA compiles a ResNet-18 init with it in a quarter of the time that
  # the partitionable one takes (3.7 s vs 14.8 s on CPU). Init runs once and unsharded, so
  # the partitionable layout buys nothing here.
  with jax.threefry_partitionable(False):
    variables = jax.jit(functools.partial(model.init, train=False))(init_rng, dummy)
  if config.init_from:
    loaded, meta = weights.load(config.init_from)
    if not config.init_head:
      loaded = weights.without_heads(loaded)
    elif class_names is not None:
      loaded = weights.align_heads(loaded, meta, class_names, source=config.init_from)
    variables = weights.merge(variables, loaded, source=config.init_from)
    if hasattr(method, "adapt_pretrained"):
      variables = method.adapt_pretrained(variables, loaded)
    logging.info("Initialised from %s (%s)", config.init_from, meta.get("source", ""))
  if hasattr(method, "init_variables"):  # weights a method loads itself (a second network)
    variables = method.init_variables(config, variables)
  init_extra = getattr(method, "init_extra", lambda *_: {})
  state = TrainState(
    step=jnp.array(0, jnp.int32),
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(variables["params"]),
    extra=init_extra(config, num_train, extra_rng, variables),
  )
  return jax.device_put(state, replicated)


def _check_config(workdir, config):
  """On resume, refuses a changed config (it would silently mix runs); writes nothing.

  Returns:
    The workdir's config.json as a dict, or {} for a new run.
  """
  path = pathlib.Path(workdir) / "config.json"
  new = json.loads(config.to_json_best_effort())
  if path.exists():
    saved = json.loads(path.read_text())
    old = traverse_util.flatten_dict(saved, sep=".")
    now = traverse_util.flatten_dict(new, sep=".")
    if now.get("model.num_classes") == 0:  # to be counted from the data (it is checked then)
      now["model.num_classes"] = old.get("model.num_classes")
    # A field that a later fer_jax added, and that is off here (False, 0, empty, None), leaves the
    # run as its saved config describes it: a workdir of an earlier version still resumes.
    added_off = {k for k in set(now) - set(old) if not now[k]}
    changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k)
                     and k not in _RESUMABLE_CHANGES and k not in added_off)
    if changed:
      raise cli.UsageError(
        f"{path}: this workdir holds a run with a different config (fields {changed}); "
        "use a new --workdir, or the same config to resume"
      )
    return saved
  return {}


def _write_config(workdir, config):
  path = pathlib.Path(workdir) / "config.json"
  if jax.process_index() == 0:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=2) + "\n")
    tmp.replace(path)  # atomic: other hosts reading it never see half a file


def _load_dataset(dataset_config):
  """Process 0 loads (and, the first time, prepares) the dataset before the other hosts, so
  hosts that share a prepared_dir never prepare it concurrently."""
  if jax.process_index() == 0:
    dataset = sources.load(dataset_config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("fer_jax: dataset ready")
  return dataset if jax.process_index() == 0 else sources.load(dataset_config)


def _ops(config, field):
  """The device_ops pipeline of config.input.<field>; a bad op string names the field."""
  try:
    return device_ops.parse(config.input[field])
  except cli.UsageError as e:
    raise cli.UsageError(f"config.input.{field}: {e}") from e


def train_input(config, inputs, batch_size, steps_per_epoch):
  """The train batches of `inputs` (a feed.Feed) of `batch_size` (this process's share)."""
  return inputs.train_batches(config, batch_size, steps_per_epoch)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  Writes to workdir: config.json, run.lock, checkpoints/, metrics.jsonl, tensorboard/, and at
  the end summary.json, confusion_matrix.png and model/ (the exported model for predict; each
  written under a temporary name and renamed), and before them what the method's
  `write_outputs(workdir, extra, dataset, config)` writes, where it defines one. Nothing is
  written before the config, dataset, noise, devices, batch sizes and initial weights have been
  checked, so a run refused for a mistake can be rerun as it is once the mistake is fixed. The workdir is locked for the life
  of the run (checkpoint.WorkdirLock): a second run in it is refused.

  Raises:
    cli.Diverged: a non-finite loss or metric (no checkpoint of non-finite parameters is kept).
    cli.NoSpace: a disk too full for a checkpoint or an output (the complete ones are kept).

  Returns:
    The summary dict (also written to summary.json).
  """
  lock = checkpoint.WorkdirLock(workdir)
  try:
    lock.acquire()  # where the workdir exists: a second run is refused before its checks
    return _train_and_evaluate(config, pathlib.Path(workdir), lock)
  finally:
    lock.release()


def _train_and_evaluate(config, workdir, lock):
  saved = _check_config(workdir, config)
  logging.info("Compute dtype %s (parameters, optimiser state and BatchNorm statistics "
               "float32)", resnet.compute_dtype(config.dtype))
  n_dev, n_proc = jax.device_count(), jax.process_count()
  if config.batch_size % n_dev or config.eval_batch_size % n_dev:
    raise cli.UsageError(
      f"config.batch_size={config.batch_size} and config.eval_batch_size="
      f"{config.eval_batch_size} must be multiples of the device count {n_dev}"
    )
  method = get_method(config)
  given = _load_dataset(config.dataset)
  # Noise is drawn, and noisy label files are read and written, in the dataset's own class
  # order, so every method of a comparison trains on the same noisy labels. (The files are
  # written once every check has passed, below.)
  dataset, noise_report = label_noise.apply(given, config.noise)
  dataset = sources.in_class_order(dataset, config.dataset)
  for split in ("train", "test"):
    counts = dataset.class_counts(split)
    per_class = (dict(zip(dataset.class_names, counts.tolist())) if len(counts) <= 20
                 else f"{counts.min()}-{counts.max()} over {len(counts)} classes")
    logging.info("%s %s: %d examples, per class %s", dataset.name, split,
                 len(getattr(dataset, split)), per_class)
  if noise_report["kind"] != "none":
    logging.info("Noise %s: %d of %d training labels changed (%.2f%%); report in %s",
                 noise_report["kind"], noise_report["flipped"], noise_report["num_train"],
                 100 * noise_report["realised_rate"], workdir / "noise" / "report.json")
  if not config.model.num_classes:  # 0 (folder data): the model follows the dataset's classes
    config.model.num_classes = len(dataset.class_names)
    logging.info("config.model.num_classes=%d: the classes of %s", config.model.num_classes,
                 dataset.source or dataset.name)
  if len(dataset.class_names) != config.model.num_classes:
    raise cli.UsageError(f"config.model.num_classes={config.model.num_classes} but dataset "
                     f"{dataset.name!r} has {len(dataset.class_names)} classes")

  mesh = create_mesh()
  replicated, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  model = method.build_model(config)
  num_train = len(dataset.train)
  steps_per_epoch = schedule.epoch_steps(config, num_train)
  _check_progressive_resume(workdir, config, saved, steps_per_epoch)
  total_steps = steps_per_epoch * config.num_epochs
  tx, lr_fns = optim.make(config.optimizer, steps_per_epoch, total_steps)
  # Made by a jitted function so the keys are global arrays (every host saves and restores them).
  rng, init_rng = jax.jit(lambda: tuple(jax.random.split(jax.random.key(config.seed))),
                          out_shardings=replicated)()
  state = create_state(config, model, tx, method, num_train, init_rng, replicated,
                       dataset.class_names)
  parameter_overview.log_parameter_overview(jax.device_get(state.params))

  inputs = feed.Feed(dataset, config.input, data_sharding,
                     progress=config.progress_bar and jax.process_index() == 0)
  logging.info(feed.describe(inputs))
  train_iter = train_input(config, inputs, config.batch_size // n_proc, steps_per_epoch)
  p_train_step = jax.jit(
    functools.partial(train_step, model=model, tx=tx, method=method, config=config,
                      lr_fn=lr_fns["default"], augment=_ops(config, "train_ops")),
    donate_argnums=0, out_shardings=(replicated, replicated),
  )
  end_epoch = epoch_pass.make(method, model, config, inputs, _ops(config, "train_ops"))
  p_eval_step = jax.jit(functools.partial(eval_step, model=model,
                                          num_classes=config.model.num_classes,
                                          dtype=jnp.dtype(resnet.compute_dtype(config.dtype)),
                                          preprocess=_ops(config, "eval_ops"),
                                          statistics=pipeline.statistics(config.input)))
  # Tracing both steps on real batches checks what only the steps read (the method's config
  # fields, the batch fields it needs) before anything is written; the traces are reused when
  # the steps first run.
  p_train_step.trace(state, inputs.put(inputs.first_rows_batch(config.batch_size // n_proc)),
                     rng)
  p_eval_step.trace(state, next(inputs.eval_batches(config.eval_batch_size)))

  # Every check passed: from here on the workdir is written.
  workdir.mkdir(parents=True, exist_ok=True)
  lock.acquire()
  _write_config(workdir, config)
  label_noise.apply(given, config.noise, workdir / "noise" if jax.process_index() == 0 else None)
  ckpt = checkpoint.Checkpointer((workdir / "checkpoints").absolute(), config.keep_checkpoints)
  meta = {"history": [], "confusion": None}
  restored = ckpt.restore(state, rng)
  if restored is not None:
    state, rng, data_state, meta = restored
    train_iter.set_state(data_state)
    logging.info("Resumed from %s at step %d", workdir / "checkpoints", int(state.step))
  train_iter = pipeline.Prefetch(train_iter, inputs.put)

  step = int(state.step)
  writer = writers.MetricWriter(workdir, resume_step=step)
  pending, postfix = [], {}
  bar = tqdm.tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                  disable=not config.progress_bar or jax.process_index() != 0)
  try:
    while step < total_steps:
      state, metrics = p_train_step(state, next(train_iter), rng)
      pending.append(metrics)
      step += 1
      bar.update()
      epoch_end = step % steps_per_epoch == 0
      if step % config.log_every_steps == 0 or epoch_end:
        fetched = _fetch(pending)
        pending = []
        _check_finite(fetched, step)
        means = {f"train_{k}": np.mean(v) for k, v in fetched.items()}
        writer.write_scalars(step, means)
        postfix["loss"] = f"{means['train_loss']:.3f}"
        bar.set_postfix(postfix)
      if epoch_end:
        confusion, eval_loss = evaluate(p_eval_step, state, inputs, config)
        report = writers.classification_report(confusion)
        epoch = step // steps_per_epoch
        meta["history"].append({"epoch": epoch, "step": step, "accuracy": report["accuracy"],
                                "mean_class_accuracy": report["mean_class_accuracy"],
                                "loss": eval_loss})
        meta["confusion"] = confusion.tolist()
        writer.write_scalars(step, {"epoch": epoch, "eval_accuracy": report["accuracy"],
                                    "eval_mean_class_accuracy": report["mean_class_accuracy"],
                                    "eval_loss": eval_loss})
        postfix["eval_acc"] = f"{report['accuracy']:.4f}"
        bar.set_postfix(postfix)
      if epoch_end and end_epoch is not None:
        state = end_epoch(state, rng)
      if epoch_end or step % config.checkpoint_every_steps == 0:
        # Never a checkpoint of non-finite parameters: the steps since the last fetch, then
        # the parameters themselves (one reduction, at checkpoints only).
        if pending:
          _check_finite(_fetch(pending), step)
        if not bool(_all_finite(state.params)):
          raise _NonFinite(f"the parameters became non-finite by step {step}")
        writer.flush()  # the logged rows up to a checkpoint survive a crash after it
        ckpt.save(step, state, rng, train_iter.get_state(), meta)
  except (KeyboardInterrupt, _NonFinite, cli.NoSpace) as stop:
    bar.close()
    train_iter.close()
    writer.close()
    ckpt.close()  # waits for a save in flight
    kept = ckpt.latest_step()
    if isinstance(stop, cli.NoSpace):
      raise
    where = (f"checkpoint of step {kept} kept in {workdir / 'checkpoints'}" if kept is not None
             else "no checkpoint yet")
    if isinstance(stop, _NonFinite):
      raise cli.Diverged(
        f"{stop}; {where}{', from before it' if kept is not None else ''} (no checkpoint of "
        "non-finite parameters is saved); "
        f"look at config.optimizer.lr={config.optimizer.lr} (lower it), the schedule's "
        f"warm-up, config.batch_size={config.batch_size}, config.dtype={config.dtype!r} and "
        "the training data; a changed config needs a new --workdir") from None
    raise Interrupted(f"stopped after step {step} of {total_steps}; {where}; the same command "
                      "resumes from it") from None
  bar.close()
  train_iter.close()
  writer.close()
  ckpt.close()
  if jax.process_index() == 0 and hasattr(method, "write_outputs"):  # before summary.json
    method.write_outputs(workdir, jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                                               state.extra), dataset, config)
  return _finish(workdir, config, dataset, noise_report, state, meta)


def _check_progressive_resume(workdir, config, saved, steps_per_epoch):
  """Refuses a changed num_epochs on a resume inside an epoch under the progressive sampler:
  each epoch's class mix depends on the epoch count, so the rest of the epoch would be drawn
  from another mix than its first part. At an epoch end (a finished run included) the change
  applies from the next epoch on, exactly as a run started with it would draw that epoch."""
  before = saved.get("num_epochs", config.num_epochs)
  if config.input.get("sampler") != "progressive" or before == config.num_epochs:
    return
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
  step = max(steps, default=0)
  if step % steps_per_epoch:
    raise cli.UsageError(
      f"config.num_epochs={config.num_epochs}: this run stopped inside epoch "
      f"{step // steps_per_epoch + 1} (step {step}) of config.num_epochs={before}, and "
      "config.input.sampler='progressive' mixes each epoch's classes by the epoch count, so "
      f"the rest of that epoch would change; resume with --config.num_epochs={before} (to its "
      "end), then change num_epochs")


class _NonFinite(Exception):
  """A non-finite training metric or parameter; the message says which and at which step."""


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _fetch(pending):
  """{metric: (steps,) host array} of the per-step metrics `pending`."""
  return jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *pending))


def _check_finite(fetched, last_step):
  """Raises _NonFinite naming the first step and metric (the loss first) that is not finite
  among `fetched`, the metrics of the steps up to `last_step`."""
  first = None
  for name in sorted(fetched, key=lambda k: (k != "loss", k)):
    values = np.asarray(fetched[name], np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad) and (first is None or bad[0] < first[0]):
      first = (bad[0], name, values[bad[0]])
  if first is not None:
    index, name, value = first
    raise _NonFinite(f"train_{name} became {value} at step {last_step - len(values) + 1 + index}")


def _finish(workdir, config, dataset, noise_report, state, meta):
  summary = writers.summarize(meta["history"], dataset.class_names, meta["confusion"])
  summary["dataset"] = {"name": dataset.name, "source": dataset.source,
                        "num_train": len(dataset.train), "num_test": len(dataset.test)}
  summary["noise"] = {k: v for k, v in noise_report.items()
                      if k not in ("per_class", "transition_matrix", "class_names")}
  if jax.process_index() == 0:
    text = json.dumps(summary, indent=2) + "\n"
    kept = "the checkpoints and the earlier outputs are kept"
    writers.write_atomically(workdir / "summary.json", lambda tmp: tmp.write_text(text),
                             len(text), "summary.json", kept)
    writers.write_atomically(
      workdir / "confusion_matrix.png",
      lambda tmp: writers.plot_confusion(meta["confusion"], dataset.class_names, tmp,
                                         f"{config.method}: accuracy "
                                         f"{summary['final_accuracy']:.4f}"),
      _FIGURE_BYTES, "the confusion matrix figure", kept)
    model_dir = workdir / "model"
    step = int(jax.device_get(state.step))
    earlier = (json.loads((model_dir / weights.META).read_text()).get("step")
               if (model_dir / weights.META).exists() else None)
    if earlier != step:
      # Inference is backbone (+ neck) + head (resnet.Classifier); what only training uses (a
      # negative head, a landmark branch, a log-variance branch) is left out of the model.
      inference = {collection: {k: v for k, v in tree.items() if k in ("backbone", "neck", "head")}
                   for collection, tree in jax.device_get(state.variables()).items()}
      mean, std = pipeline.statistics(config.input)
      _write_model(workdir, earlier, step, inference, {
        "arch": config.model.arch, "width": config.model.width,
        "num_classes": config.model.num_classes, "class_names": list(dataset.class_names),
        "neck": config.model.get("neck", "pool"),
        "image_size": config.input.image_size, "mean": list(mean), "std": list(std),
        "has_head": "head" in inference["params"],
        "source": f"trained: {workdir.absolute()}", "step": step,
      })
  logging.info("final accuracy %.4f, best %.4f (epoch %d), mean of last 5 %.4f",
               summary["final_accuracy"], summary["best_accuracy"], summary["best_epoch"],
               summary["mean_last5_accuracy"])
  return summary


_FIGURE_BYTES = 512 * 1024  # a confusion-matrix PNG is 20-200 KB


def _write_model(workdir, earlier, step, variables, meta):
  """Writes model/ under a temporary name, then renames it into place; the model/ of an earlier
  step (an extended run) moves to model_step<N>/ just before. A reader sees a complete model/,
  and a full disk leaves the earlier model/ as it was."""
  kept = ("the checkpoints are kept" if earlier is None
          else f"the model of step {earlier} in model/ and the checkpoints are kept")

  def keep_earlier(model_dir):
    moved = workdir / f"model_step{earlier}"
    while moved.exists():
      moved = moved.with_name(moved.name + "_")
    model_dir.rename(moved)
    logging.info("The model of step %s moved to %s; model/ is now that of step %d", earlier,
                 moved, step)

  writers.write_atomically(workdir / "model", lambda path: weights.save(path, variables, meta),
                           checkpoint.tree_bytes(variables) + 64 * 1024, "the model", kept,
                           displace=keep_earlier)
