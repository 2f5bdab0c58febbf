"""Fields shared by every method's config, and the `:arg` parser."""

import ml_collections as mlc

from fer_jax.data import sources

DATASETS = ("synthetic", "raf_db", "ferplus", "affectnet", "folder")


def parse_arg(arg, **defaults):
  """Parses `a=1,b=x` (or a bare first word for `data`) into a ConfigDict over `defaults`."""
  out = mlc.ConfigDict(defaults)
  for i, part in enumerate(filter(None, (arg or "").split(","))):
    key, sep, value = part.partition("=")
    if not sep:
      if i:
        raise ValueError(f"config argument {part!r} in {arg!r}: expected key=value")
      key, value = "data", key
    if key not in defaults:
      raise ValueError(f"config argument {key!r} in {arg!r}: expected one of {sorted(defaults)}")
    kind = type(defaults[key])
    out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return out


# The `:arg` keys every method config takes (it may add its own).
ARG_DEFAULTS = dict(data="synthetic", noise=0.0, noise_kind="symmetric", noise_file="",
                    noise_predictions="", recipe="auto", runlocal=False)
RECIPES = ("auto", "paper")


def base_config(method, data="synthetic", noise=0.0, noise_kind="symmetric", noise_file="",
                noise_predictions="", recipe="auto", runlocal=False):
  """Defaults for all methods; `data` picks the dataset block.

  Args:
    method: the method module name under fer_jax/methods.
    data: a dataset known to `dataset_config`.
    noise: rate of synthetic training-label noise (0: the labels as given).
    noise_kind: symmetric | asymmetric_lanet | asymmetric_ncct | instance (see fer_jax/noise.py).
    noise_file: a noisy label file in the dataset's format (e.g. EAC's noise01.txt) instead.
    noise_predictions: for noise_kind=instance, the workdir of a finished CE run on the clean
      labels that recorded its averaged predictions (configs/baseline.py,
      record_train_probabilities=true).
    recipe: auto (the synthetic recipe on the synthetic data, the method's paper recipe on real
      data) | paper (the paper recipe on any data: 224 px, full-width network, the paper's
      batch, optimiser and epochs; the synthetic faces are then stored at their 128 px canvas).
    runlocal: shrink everything for a smoke test.
  """
  c = mlc.ConfigDict()
  c.seed = 0
  c.method = method
  c.model = mlc.ConfigDict(dict(arch="resnet18", width=64, num_classes=7))
  # A checkpoint from `python -m fer_jax.convert` or a run's `model/`: its backbone (and, with
  # init_head, a head for the run's classes) replaces the random init. Empty: from scratch.
  c.init_from = ""
  # Whether init_from's classifier head is loaded (matched to the run's classes by name).
  # False: a fresh head, as every paper starts (its pretrained face network's fc is dropped).
  c.init_head = True
  # auto: bfloat16 compute on GPU/TPU, float32 on CPU | float32 | bfloat16. Parameters,
  # optimiser state and BatchNorm statistics are float32 in every case.
  c.dtype = "auto"
  c.num_epochs = 60
  c.batch_size = 32  # global, over all devices and hosts
  c.eval_batch_size = 64
  c.optimizer = mlc.ConfigDict(
    dict(
      name="adam",  # adam (coupled L2, as torch.optim.Adam) | adamw | sgd
      lr=2e-4,
      weight_decay=1e-4,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      momentum=0.9,  # sgd only
      # ((regex over "backbone/layer1_0/conv1/kernel"-style names, lr), ...): first match wins,
      # unmatched parameters use `lr`.
      param_group_lrs=(),
      schedule="exponential",  # exponential (per epoch) | linear (to 0 per step) | constant
      decay_rate=0.9,  # exponential: lr * decay_rate**(epoch // decay_every_epochs)
      decay_every_epochs=1,
    )
  )
  if recipe not in RECIPES:
    raise ValueError(f"config argument recipe={recipe!r}: expected one of {list(RECIPES)}")
  c.dataset = dataset_config(data, runlocal)
  if data == "synthetic" and recipe == "paper" and not runlocal:
    c.dataset.image_size = 128
  if "num_classes" in c.dataset:  # FERPlus/AffectNet 7 or 8: the model follows the dataset
    c.model.num_classes = c.dataset.get_ref("num_classes")
  if data == "folder":  # 0: one class per class folder, counted when the data is read
    c.model.num_classes = 0
  # Training-label noise (fer_jax/noise.py): kind none | symmetric | asymmetric_lanet |
  # asymmetric_ncct | instance (the instance-dependent protocol, from the averaged predictions
  # of the CE run in `predictions`) | file (a noisy label file in the dataset's format, e.g.
  # EAC's noise01.txt).
  kind = "file" if noise_file else noise_kind if noise else "none"
  # order: the class order a symmetric flip counts its offset in: "" the dataset's own |
  # "lanet" LA-Net's (its exact noisy labels; fer_jax/data/label_noise.py).
  c.noise = mlc.ConfigDict(dict(kind=kind, rate=noise, seed=0, file=noise_file, order="",
                                predictions=noise_predictions))
  c.input = mlc.ConfigDict(
    dict(
      image_size=224,
      # Augmentation, run inside the jitted step on the devices (fer_jax/data/device_ops.py):
      train_ops="",  # filled by the method config
      # Normalisation, RGB on [0, 1]: empty for ImageNet's mean and std. Recorded in model.json,
      # so evaluation, predict and the exports normalise as training did.
      mean=(),
      std=(),
      # Where the decoded splits live (fer_jax/data/feed.py): device (decoded once into device
      # memory, batches gathered there) | host (grain decodes every batch) | auto (device when
      # the decoded splits take at most `device_budget` of one device's memory).
      placement="auto",
      device_budget=0.25,
      num_threads=8,
      num_workers=-1,  # worker processes; -1: none on CPU, half the cores with an accelerator
      # shuffle: each epoch a permutation | balanced: each epoch len(train) draws with
      # replacement, class c with probability proportional to 1/count(c) (AffectNet recipe) |
      # progressive: from the label histogram to uniform over the epochs (LA-Net).
      sampler="balanced" if data == "affectnet" else "shuffle",
      drop_last=False,  # True: an epoch is len(train) // batch_size steps
    )
  )
  c.log_every_steps = 50
  c.checkpoint_every_steps = 500  # also at every epoch end
  c.keep_checkpoints = 2
  c.progress_bar = True
  if runlocal:
    c.num_epochs = 2
    c.batch_size = 8
    c.eval_batch_size = 8
    c.model.width = 8
    c.input.image_size = 32
    c.log_every_steps = 2
    c.checkpoint_every_steps = 4
  return c


def synthetic_recipe(c):
  """The training setup every method uses on the embedded synthetic dataset, so that their
  rows in the results table compare: 72 px (a 3x3 layer4 map, which CAM-based methods need;
  XLA:CPU convolutions are slow at 2x2), a quarter-width ResNet-18 from scratch, 15 epochs of
  batch 64, Adam (coupled L2 1e-4) lr 1e-3 x0.95 per epoch. A few minutes per run on a 2-core
  CPU. Method-specific settings (warm-up, loss weights, augmentation) stay the method's own."""
  c.input.image_size = 72
  c.model.width = 16
  c.num_epochs = 15
  c.batch_size = 64
  c.optimizer.update(dict(name="adam", lr=1e-3, weight_decay=1e-4, schedule="exponential",
                          decay_rate=0.95, decay_every_epochs=1, param_group_lrs=()))
  c.log_every_steps = 20


def pretraining_recipe(c, recipe):
  """The synthetic recipe's schedule for a pretraining config; with recipe=paper at the
  papers' resolution and width, for method runs with that argument."""
  size, width = c.input.image_size, c.model.width
  synthetic_recipe(c)
  if recipe == "paper":
    c.input.image_size, c.model.width = size, width


def uses_synthetic_recipe(arg):
  """Whether a method config trades its paper recipe for `synthetic_recipe` (parsed `arg`)."""
  return arg.data == "synthetic" and arg.recipe == "auto" and not arg.runlocal


def dataset_config(data, runlocal=False):
  """The dataset block: the dataset module's defaults (fer_jax/data/<data>.py DEFAULTS)."""
  if data not in DATASETS:
    raise ValueError(f"config argument data={data!r}: expected one of {list(DATASETS)}")
  c = sources.default_config(data)
  if runlocal and data == "synthetic":
    c.num_train, c.num_test = 96, 40
  return c


def eval_ops(image_size):
  """The papers' eval transform: bilinear resize (ImageNet normalisation happens on device)."""
  return f"resize({image_size})"
