r"""Train-step throughput and peak memory of the official PyTorch EAC and NCCTFER code.

  python scripts/benchmark_torch.py --official_dir .official --methods ce,eac,ncct \
    --batch_size 32 --image_size 224 --steps 20 [--channels_last] [--amp] [--write]

The side-by-side for the JAX rows of docs/benchmarks.md. The official repositories have no
licence, so nothing of theirs is copied here: their modules are imported at run time from
--official_dir, which holds unmodified extracts of the two repositories:
  <official_dir>/eac   github.com/zyh-uaiaaaa/Erasing-Attention-Consistency  (src/*.py)
  <official_dir>/ncct  github.com/Naveen-siva-kumar/NCCTFER  (algorithm/, model/, common/)
each with an optional COMMIT file holding the extracted commit (put into the config text).
This script only drives their classes and losses the way one iteration of their train loop does.

Methods (--methods, comma-separated):
  ce          torchvision resnet18 (7 classes), cross-entropy, Adam(lr 2e-4, coupled L2 1e-4):
              the CE baseline of configs/baseline.py.
  eac         EAC as coded (src/main.py `train`): their `Model` (Caffe-style ResNet-50, given the
              random weights of their own ResNet init instead of resnet50_ft_weight.pkl), forward on
              the erased batch and on the flipped batch, CE on the first, their `ACLoss` on the two
              CAMs with their `generate_flip_grid(7, 7)` (rebuilt every iteration, as they do),
              loss = CE + 5 * AC, Adam(lr 1e-4, weight_decay 1e-4) as in their main.py.
              Their Model needs 224 px input (AvgPool2d(7), 7x7 flip grid).
  eac_r18     The README-FAQ ResNet-18 variant (not in their repo): the same step with their
              `ACLoss` and `generate_flip_grid`, but the model is a torchvision resnet18 with a
              CAM head written here that computes what their `Model.forward` does (logits, and
              CAMs from the detached fc weight times the layer4 map, all 7 classes); lr 2e-4.
              Any size divisible by 32.
  ce_caffe50  CE baseline on EAC's backbone: their `Model`'s modules (features, features2, fc) with
              CE only and no CAM, Adam(lr 1e-4, weight_decay 1e-4). 224 px only.
  ncct        NCCTFER (algorithm/noisyfer_aug_new_arch.py `noisyfer.train`, one iteration):
              their `noisyfer` object (res18feature = DataParallel ResNet-18, positive and negative
              Linear(512, 7) heads, their Adam: backbone lr 1e-4, heads 1e-3, no decay), built with
              main_rafdb_new_arch.py's defaults but pretrained='' (no res18_naive.pth load).
              Forward of the weak and the strong view, both heads on both; in the robust stage
              (--ncct_stage robust, their epochs >= warmup_epochs = 4, the default) their
              `Sai_weighted_CCE_` on both views' positive logits plus their
              `noisyfer.consistency_loss` (k = 4) on the negative logits of the samples it flags
              as noisy; in the warm-up stage the mean of the two views' CE. Backward, step.
              Any size.

Inputs are random normalised NCHW float batches and random labels in [0, 7), already on the
device and reused every step: data loading and augmentation (host-side in their DataLoaders)
are not timed. Their per-iteration bookkeeping (EAC: argmax and running sums; NCCTFER: their
`accuracy` and the `loss.item()` of the tqdm bar, a host sync) is left out unless
--bookkeeping. cudnn.deterministic is set as their main scripts leave it: True for the EAC
methods (their `setup_seed`, which this script calls), torch's default otherwise. TF32 and
cudnn.benchmark stay at torch's defaults. CUDA_VISIBLE_DEVICES defaults to 0 (NCCTFER's
DataParallel would otherwise span every GPU; their main sets it too).

Each method: 3 warm-up steps, then --steps timed steps between two synchronisations. Columns
as in docs/benchmarks.md; "img/s step only" counts batch images per step (an image counts once
however many views of it the step runs, as in the JAX rows); the pipeline columns are "-";
"compile s" holds the first warm-up step's seconds, marked "(first step)" (eager PyTorch
compiles nothing: this is cuDNN/cuBLAS start-up, kernel selection and allocator growth).
Peak memory is torch.cuda.max_memory_allocated, reset per method; on CPU the process's peak
RSS, cumulative over the methods run so far.
With --write, the rows are appended to docs/benchmarks.md.

Third-party modules their files import at module level but the timed code never uses (cv2,
sklearn, matplotlib, tqdm) are replaced by inert stand-ins when not installed.
"""

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.machinery
import importlib.util
import io
import os
import pathlib
import resource
import subprocess
import sys
import time
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("ce", "eac", "eac_r18", "ce_caffe50", "ncct")
EAC_FILES = ("src/model.py", "src/resnet.py", "src/loss.py", "src/utils.py")
NCCT_FILES = ("algorithm/noisyfer_aug_new_arch.py", "algorithm/loss.py", "model/cnn.py",
              "model/resnet.py", "common/utils.py")
OPTIONAL_DEPS = ("cv2", "sklearn.metrics", "matplotlib.pyplot", "tqdm")
NUM_CLASSES = 7
HEADER = ("| date | commit | devices | config | batch | img/s step only | img/s with pipeline | "
          "img/s host pipeline alone | compile s | peak MiB |")


def _parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--official_dir", default=".official",
                 help="Folder holding eac/ and ncct/ (the extracted official repositories).")
  p.add_argument("--methods", default="ce,eac,ncct", help=f"Comma-separated, of {METHODS}.")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--steps", type=int, default=20, help="Timed steps (after 3 warm-up steps).")
  p.add_argument("--warmup", type=int, default=3, help="Untimed steps first (at least 1).")
  p.add_argument("--channels_last", action="store_true", help="Model and inputs NHWC in memory.")
  p.add_argument("--amp", action="store_true",
                 help="bfloat16 autocast around forward and losses (their code is float32).")
  p.add_argument("--ncct_stage", choices=("robust", "warmup"), default="robust",
                 help="Which branch of NCCTFER's loop: robust (epochs >= 4) or warmup.")
  p.add_argument("--bookkeeping", action="store_true",
                 help="Also run their per-iteration accuracy/loss bookkeeping.")
  p.add_argument("--device", default="", help="cuda or cpu; empty: cuda when available.")
  p.add_argument("--write", action="store_true", help="Append the rows to docs/benchmarks.md.")
  p.add_argument("--commit", default="", help="Commit to record (default: git HEAD of this "
                 "checkout; a copy sent to another machine may carry stale git metadata).")
  args = p.parse_args(argv)
  args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = [m for m in args.methods if m not in METHODS]
  if unknown or not args.methods:
    p.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  if args.warmup < 1 or args.steps < 1:
    p.error("--warmup and --steps must be >= 1")
  fixed = [m for m in args.methods if m in ("eac", "ce_caffe50")]
  if fixed and args.image_size != 224:
    p.error(f"{', '.join(fixed)}: EAC's official Model only runs at --image_size 224 "
            "(AvgPool2d(7) on the 7x7 layer4 map, 7x7 flip grid)")
  if "eac_r18" in args.methods and args.image_size % 32:
    p.error("eac_r18 needs --image_size divisible by 32")
  official = pathlib.Path(args.official_dir).expanduser()
  if not official.is_absolute() and not official.exists() and (REPO / official).exists():
    official = REPO / official
  args.official_dir = official.resolve()
  return args


# ---------------------------------------------------------------------------------------------
# Importing the official code


def _stand_in(name):
  """An importable module whose attributes are callables that fail when called."""
  module = types.ModuleType(name)
  module.__file__ = f"<stand-in for {name}, not installed>"

  def getattr_(attr):
    if attr.startswith("__"):
      raise AttributeError(attr)

    def missing(*args, **kwargs):
      raise RuntimeError(f"{name}.{attr}: {name} is not installed (benchmark_torch stand-in)")

    return missing

  module.__getattr__ = getattr_
  return module


def _check_files(root, files, what):
  for f in files:
    if not (root / f).is_file():
      sys.exit(f"benchmark_torch: {what} file {root / f} is missing. Extract the official "
               f"repository there (see the module docstring) or pass --official_dir.")


def _import_official(root, modules, label):
  """Imports `modules` (dotted names relative to `root`) from `root` only; returns them by name.

  The official repositories use generic top-level names (model, loss, utils, resnet, common...),
  and both have a `model`. Each repository is imported in isolation: its top-level names are
  taken out of sys.modules while importing and removed again afterwards (the imported modules
  keep their own references), and folders without __init__.py are set up as packages rooted in
  `root` so that no installed package of the same name can shadow them.
  """
  tops = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if p.is_dir()}

  def owned(name):
    return name.split(".")[0] in tops

  saved = {k: v for k, v in sys.modules.items() if owned(k)}
  for k in saved:
    del sys.modules[k]
  stubbed = []
  for dotted in OPTIONAL_DEPS:
    top = dotted.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
      parent = None
      for i, part in enumerate(dotted.split(".")):
        name = ".".join(dotted.split(".")[: i + 1])
        module = sys.modules.setdefault(name, _stand_in(name))
        if parent is not None:
          setattr(parent, part, module)
        parent = module
      stubbed.append(top)
  for d in root.iterdir():
    if d.is_dir() and not (d / "__init__.py").exists() and any(d.glob("*.py")):
      package = types.ModuleType(d.name)
      package.__path__ = [str(d)]
      package.__spec__ = importlib.machinery.ModuleSpec(d.name, None, is_package=True)
      package.__spec__.submodule_search_locations = [str(d)]
      sys.modules[d.name] = package
  sys.path.insert(0, str(root))
  try:
    return {m: importlib.import_module(m) for m in modules}
  finally:
    sys.path.remove(str(root))
    for k in [k for k in sys.modules if owned(k)]:
      del sys.modules[k]
    sys.modules.update(saved)
    for top in stubbed:
      for k in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
        del sys.modules[k]
    if stubbed:
      print(f"note: {label}: {', '.join(sorted(set(stubbed)))} not installed; stand-ins were "
            "provided for their module-level imports (unused by the step)", file=sys.stderr)


def _official_commit(root):
  f = root / "COMMIT"
  if f.is_file():
    return f.read_text().split()[0][:7]
  out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=7", "HEAD"],
                       capture_output=True, text=True, check=False)
  return out.stdout.strip() if out.returncode == 0 else "unknown commit"


# ---------------------------------------------------------------------------------------------
# The methods: each builder returns (step function, config text, cudnn.deterministic)


class _Setup:
  def __init__(self, args):
    import torch

    self.torch = torch
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    self.device = torch.device(name)
    self.cuda = self.device.type == "cuda"
    self.args = args
    self.fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    self._eac = self._ncct = None

  def images(self):
    torch = self.torch
    s = self.args.image_size
    x = torch.randn(self.args.batch_size, 3, s, s, device=self.device)
    return x.contiguous(memory_format=self.fmt)

  def labels(self):
    return self.torch.randint(0, NUM_CLASSES, (self.args.batch_size,), device=self.device)

  def model(self, module):
    return module.to(self.device, memory_format=self.fmt).train()

  def autocast(self):
    return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.args.amp)

  def eac(self):
    if self._eac is None:
      root = self.args.official_dir / "eac"
      _check_files(root, EAC_FILES, "official EAC")
      self._eac = _import_official(root / "src", ["model", "loss", "utils"], "EAC")
      self._eac["commit"] = _official_commit(root)
    return self._eac

  def ncct(self):
    if self._ncct is None:
      root = self.args.official_dir / "ncct"
      _check_files(root, NCCT_FILES, "official NCCTFER")
      modules = ["algorithm.noisyfer_aug_new_arch", "common.utils"]
      self._ncct = _import_official(root, modules, "NCCTFER")
      self._ncct["commit"] = _official_commit(root)
    return self._ncct


def _adam(torch, params, lr):
  return torch.optim.Adam(params, lr=lr, weight_decay=1e-4)


def build_ce(s):
  import torchvision

  torch = s.torch
  model = s.model(torchvision.models.resnet18(num_classes=NUM_CLASSES))
  opt = _adam(torch, model.parameters(), 2e-4)
  x, y = s.images(), s.labels()
  criterion = torch.nn.CrossEntropyLoss()

  def step():
    with s.autocast():
      loss = criterion(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

  return step, "PyTorch ce torchvision resnet18", False


def _eac_official_model(s):
  """Their Model(args), its ResNet-50 'pretrained' weights being their own random init."""
  eac = s.eac()
  model_module = eac["model"]
  random_init = model_module.ResNet(model_module.Bottleneck, [3, 4, 6, 3]).state_dict()
  weights = {k: v.numpy() for k, v in random_init.items()}
  # Model.__init__ reads args.resnet50_path with open() and pickle.loads(); answer both from
  # memory instead of resnet50_ft_weight.pkl, then load strictly as their code does.
  saved_pickle = model_module.pickle
  model_module.open = lambda *a, **k: io.BytesIO(b"")
  model_module.pickle = types.SimpleNamespace(loads=lambda *a, **k: weights)
  try:
    args = argparse.Namespace(resnet50_path="<random init>", w=7, h=7, lam=5.0)
    model = model_module.Model(args)
  finally:
    del model_module.open
    model_module.pickle = saved_pickle
  return model, args


def _eac_step(s, model, opt, args, bookkeeping):
  """One iteration of EAC's main.py `train` with their ACLoss and generate_flip_grid."""
  torch, eac = s.torch, s.eac()
  imgs1 = s.images()
  imgs2 = imgs1.flip(3).contiguous(memory_format=s.fmt)
  labels = s.labels()
  totals = {"correct": 0, "loss": 0.0}

  def step():
    with s.autocast():
      output, hm1 = model(imgs1)
      _, hm2 = model(imgs2)  # their output_flip is unused
      grid_l = eac["utils"].generate_flip_grid(args.w, args.h, s.device)
      loss1 = torch.nn.CrossEntropyLoss()(output, labels)
      flip_loss_l = eac["loss"].ACLoss(hm1, hm2, grid_l, output)
      loss = loss1 + args.lam * flip_loss_l
    opt.zero_grad()
    loss.backward()
    opt.step()
    if bookkeeping:
      _, predicts = torch.max(output, 1)
      totals["correct"] += torch.eq(predicts, labels).sum()
      totals["loss"] += loss

  return step


def build_eac(s):
  eac = s.eac()
  eac["utils"].setup_seed(0)
  model, args = _eac_official_model(s)
  model = s.model(model)
  opt = _adam(s.torch, model.parameters(), 1e-4)
  step = _eac_step(s, model, opt, args, s.args.bookkeeping)
  return step, f"official PyTorch eac resnet50_caffe (EAC@{eac['commit']})", True


def build_eac_r18(s):
  import torchvision

  torch, eac = s.torch, s.eac()
  eac["utils"].setup_seed(0)

  class CamResNet18(torch.nn.Module):
    """torchvision resnet18 + Linear(512, 7) returning (logits, CAMs of all classes)."""

    def __init__(self):
      super().__init__()
      children = list(torchvision.models.resnet18().children())
      self.features = torch.nn.Sequential(*children[:-2])
      self.pool = children[-2]
      self.fc = torch.nn.Linear(512, NUM_CLASSES)

    def forward(self, x):
      fmap = self.features(x)
      logits = self.fc(self.pool(fmap).flatten(1))
      kernel = self.fc.weight.detach()[None, :, :, None, None]  # 1 x K x C x 1 x 1
      cams = (fmap.unsqueeze(1) * kernel).sum(2)  # N x K x H x W, as their broadcast-and-sum
      return logits, cams

  model = s.model(CamResNet18())
  side = s.args.image_size // 32
  args = argparse.Namespace(w=side, h=side, lam=5.0)
  opt = _adam(torch, model.parameters(), 2e-4)
  step = _eac_step(s, model, opt, args, s.args.bookkeeping)
  return step, f"PyTorch eac resnet18 (their ACLoss, our CAM head; EAC@{eac['commit']})", True


def build_ce_caffe50(s):
  torch, eac = s.torch, s.eac()
  eac["utils"].setup_seed(0)
  model, _ = _eac_official_model(s)
  model = s.model(model)
  opt = _adam(torch, model.parameters(), 1e-4)
  x, y = s.images(), s.labels()
  criterion = torch.nn.CrossEntropyLoss()

  def step():
    with s.autocast():
      logits = model.fc(model.features2(model.features(x)).flatten(1))
      loss = criterion(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()

  return step, f"PyTorch ce resnet50_caffe (EAC's Model, CE only; EAC@{eac['commit']})", True


def build_ncct(s):
  torch, ncct = s.torch, s.ncct()
  noisyfer = ncct["algorithm.noisyfer_aug_new_arch"].noisyfer
  accuracy = ncct["common.utils"].accuracy
  torch.manual_seed(1)  # their main's --seed
  # main_rafdb_new_arch.py's argparse defaults that noisyfer and res18feature read.
  args = argparse.Namespace(
    batch_size=s.args.batch_size, lr=1e-3, lr2=1e-4, eps=0.35, warmup_epochs=4, alpha=0.5,
    print_freq=30, n_epoch=40, num_classes=NUM_CLASSES, k=4, model_type="res", resume="",
    pretrained="", adjust_lr=0, seed=1)
  module_cuda = torch.nn.Module.cuda
  if not s.cuda:  # res18feature calls .cuda() on its DataParallel; a no-op when timing on CPU
    torch.nn.Module.cuda = lambda self, *a, **k: self
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      nf = noisyfer(args, None, s.device, 3, NUM_CLASSES)
  finally:
    torch.nn.Module.cuda = module_cuda
  if s.args.channels_last:
    for m in (nf.model, nf.positive_classifier, nf.negative_classifier):
      m.to(memory_format=torch.channels_last)
  nf.model.train()
  epoch = args.warmup_epochs if s.args.ncct_stage == "robust" else 0
  images_w, images_s, labels = s.images(), s.images(), s.labels()
  totals = {"correct": 0}

  def step():
    with s.autocast():
      features_w = nf.model(images_w)
      features_s = nf.model(images_s)
      logits_w = nf.positive_classifier(features_w)
      logits_s = nf.positive_classifier(features_s)
      n_logits_w = nf.negative_classifier(features_w)
      n_logits_s = nf.negative_classifier(features_s)
      if epoch < nf.warmup_epochs:
        loss = (nf.ce_loss(logits_w, labels) + nf.ce_loss(logits_s, labels)) / 2.0
      else:
        loss_p_w, noisy_idx, _ = nf.weighted_CCE(logits_w, labels)
        loss_p_s, _, _ = nf.weighted_CCE(logits_s, labels)
        loss_p = (loss_p_w + loss_p_s) / 2.0
        if noisy_idx.numel():
          loss = loss_p + nf.consistency_loss(n_logits_w[noisy_idx], n_logits_s[noisy_idx])
        else:
          loss = loss_p
    if s.args.bookkeeping:
      prec1 = accuracy(logits_w, labels, topk=(1,))
      totals["correct"] += prec1
    nf.optimizer.zero_grad()
    loss.backward()
    nf.optimizer.step()
    if s.args.bookkeeping:  # their tqdm bar reads loss.data.item() and prec1.item() each step
      loss.data.item(), prec1.item()

  stage = "robust stage" if epoch >= nf.warmup_epochs else "warm-up stage"
  return step, f"official PyTorch ncct resnet18 {stage} (NCCTFER@{ncct['commit']})", False


BUILDERS = {"ce": build_ce, "eac": build_eac, "eac_r18": build_eac_r18,
            "ce_caffe50": build_ce_caffe50, "ncct": build_ncct}


# ---------------------------------------------------------------------------------------------
# Timing and the table


def _time_steps(s, step, warmup, steps):
  sync = s.torch.cuda.synchronize if s.cuda else (lambda: None)
  sync()
  start = time.perf_counter()
  step()
  sync()
  first_s = time.perf_counter() - start
  for _ in range(warmup - 1):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return first_s, (time.perf_counter() - start) / steps


def _peak_memory(s):
  if s.cuda:
    return s.torch.cuda.max_memory_allocated(s.device) / 2**20, "torch max allocated"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host RSS peak, process"


def main(argv=None):
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
  import torch

  s = _Setup(args)
  torch_version = torch.__version__.split("+")[0]
  if s.cuda:
    devices = f"1 x {torch.cuda.get_device_name(s.device)} (torch {torch_version})"
  else:
    devices = f"1 x cpu (torch {torch_version})"
  commit = args.commit or subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True, check=False).stdout.strip()
  commit = commit or "uncommitted"
  dtype = "bfloat16 autocast" if args.amp else "float32"
  layout = " channels_last" if args.channels_last else ""
  default_deterministic = torch.backends.cudnn.deterministic
  rows = []
  for method in args.methods:
    gc.collect()
    if s.cuda:
      torch.cuda.empty_cache()
      torch.cuda.reset_peak_memory_stats(s.device)
    torch.manual_seed(0)
    step, config, deterministic = BUILDERS[method](s)
    torch.backends.cudnn.deterministic = deterministic
    first_s, step_s = _time_steps(s, step, args.warmup, args.steps)
    torch.backends.cudnn.deterministic = default_deterministic
    del step
    memory, memory_kind = _peak_memory(s)
    b = args.batch_size
    config = f"{config} {args.image_size}px {dtype}{layout}"
    rows.append(f"| {datetime.date.today()} | {commit} | {devices} | {config} | {b} | "
                f"{b / step_s:.1f} | - | - | {first_s:.1f} (first step) | "
                f"{memory:.0f} ({memory_kind}) |")
    print(f"{method}: {b / step_s:.1f} img/s ({step_s * 1e3:.1f} ms/step)", file=sys.stderr,
          flush=True)
  print(HEADER)
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  print("\n".join(rows))
  if args.write:
    with open(REPO / "docs" / "benchmarks.md", "a") as f:
      f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
