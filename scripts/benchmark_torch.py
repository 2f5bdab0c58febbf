r"""Train-step throughput and peak memory of the official PyTorch EAC and NCCTFER code.

  python scripts/benchmark_torch.py --official_dir .official --methods ce,eac,ncct \
    --batch_size 32 --image_size 224 --steps 20 [--channels_last] [--amp] [--write]
  python scripts/benchmark_torch.py --official_dir .official --methods eac,ncct \
    --end_to_end --raf_path /tmp/raf_db [--workers 4] [--batch_size B] --steps 50

The side-by-side for the JAX rows of docs/benchmarks.md. The official repositories have no
licence, so nothing of theirs is copied here: their modules are imported at run time from
--official_dir, which holds unmodified extracts of the two repositories:
  <official_dir>/eac   github.com/zyh-uaiaaaa/Erasing-Attention-Consistency  (src/*.py)
  <official_dir>/ncct  github.com/Naveen-siva-kumar/NCCTFER  (algorithm/, model/, common/,
                       main_rafdb_new_arch.py)
each with an optional COMMIT file holding the extracted commit (put into the config text).
This script only drives their classes, losses, datasets and main functions the way their train
loop does. To lay the folder out from git copies of the two repositories ($EAC and $NCCT are
their git directories: a clone's .git, or a bare mirror), never committed:

  mkdir -p .official/eac .official/ncct && echo /.official/ >> .git/info/exclude
  git --git-dir="$EAC" archive HEAD src | tar -x -C .official/eac
  git --git-dir="$EAC" rev-parse HEAD > .official/eac/COMMIT
  git --git-dir="$NCCT" archive HEAD algorithm common model main_rafdb_new_arch.py \
    | tar -x -C .official/ncct
  git --git-dir="$NCCT" rev-parse HEAD > .official/ncct/COMMIT

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

Step only (the default): inputs are random normalised NCHW float batches and random labels in
[0, 7), already on the device and reused every step: data loading and augmentation (host-side
in their DataLoaders) are not timed. Their per-iteration bookkeeping (EAC: argmax and running
sums; NCCTFER: their `accuracy` and the `loss.item()` of the tqdm bar, a host sync) is left out
unless --bookkeeping. cudnn.deterministic is set as their main scripts leave it: True for the
EAC methods (their `setup_seed`, which this script calls), torch's default otherwise. TF32 and
cudnn.benchmark stay at torch's defaults. CUDA_VISIBLE_DEVICES defaults to 0 (NCCTFER's
DataParallel would otherwise span every GPU; their main sets it too).

End to end (--end_to_end --raf_path DIR, DIR in RAF-DB's layout: EmoLabel/list_patition_label.txt
and Image/aligned/*_aligned.jpg, e.g. `python -m fer_jax.data.synthetic --raf_db_dir DIR`):
each method's step is also fed from the official input pipeline, as their training loop feeds
it. Their own main() is run (with argv --raf_path, and --batch_size / --workers when given here)
until it constructs its training DataLoader; that call is intercepted, and the DataLoader is then
built from exactly the dataset and arguments their main passed. So the dataset class, its
transforms and the loader settings are theirs, unmodified:
  eac, eac_r18, ce, ce_caffe50
      EAC's src/main.py main(): `RafDataset(args, phase='train', transform=train_transforms)`
      (src/dataset.py: cv2.imread, BGR->RGB, their `add_g` Gaussian noise with p 0.5, and the
      flipped second view) with ToPILImage, Resize((224, 224)), ToTensor, ImageNet Normalize,
      RandomErasing(scale=(0.02, 0.25)); DataLoader(batch_size 32, shuffle, num_workers 4,
      pin_memory). --eac_label_path picks their label file (default noise01.txt, as their
      train.sh runs: the noisy-label branch of RafDataset, which transforms the cv2-flipped image
      separately; list_patition_label.txt takes the clean branch, which flips the transformed
      tensor). ce and ce_caffe50 (no official CE code) take EAC's pipeline and use its first view.
  ncct
      NCCTFER's main_rafdb_new_arch.py main(): their `RafDataSet` with their weak view
      (Resize 224, RandomCrop(224, padding 4), flip) and strong view (the same and their
      RandAugmentMC(2, 10)); DataLoader(batch_size 128, drop_last, shuffle, num_workers 4,
      pin_memory).
Each timed iteration takes the next batch from the loader, moves the tensors the step reads to
the device with .to(device) as their loops do, and runs the step; an exhausted loader starts its
next epoch (new worker processes, as in their loop). Warm-up: max(--warmup, workers x 2) batches,
so that the loader's prefetch queue (2 batches per worker) is not what gets timed. Label files
their code reads but DIR lacks (noise01.txt; NCCTFER's EmoLabel/train_label.txt and
test_label.txt) are given, in a temporary folder of links to DIR, as links to
list_patition_label.txt: the label values do not change the work, the file name picks the
branch. Their modules import cv2, pandas and torchvision, which must be installed.

Columns as in scripts/benchmark.py's table. "input" says what fed the step. "img/s step only"
counts batch images per step (an image counts once however many views of it the step runs, as
in the JAX rows), on the random batch above; "img/s device path" is "-" (their code has none);
end to end, "img/s host path (x step)" is the loader-fed rate and its fraction of the step-only
one, and "img/s host alone" is their DataLoader read on its own from a fresh iterator (the first
workers x 2 batches untimed, then --steps batches). "compile s" holds the first step's seconds,
marked "(first step)" (eager PyTorch compiles nothing: this is cuDNN/cuBLAS start-up, kernel
selection and allocator growth). Each method: --warmup untimed steps, then --steps timed steps
between two synchronisations. Peak memory is torch.cuda.max_memory_allocated, reset per method;
on CPU the process's peak RSS, cumulative over the methods run so far (the loader's worker
processes not included). With --write, the rows are appended to docs/benchmarks.md.

Third-party modules their files import at module level but the timed step never uses (cv2,
sklearn, matplotlib, tqdm) are replaced by inert stand-ins when not installed (not in the end to
end mode, whose datasets decode with cv2).
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
import shutil
import subprocess
import sys
import tempfile
import time
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("ce", "eac", "eac_r18", "ce_caffe50", "ncct")
EAC_FILES = ("src/model.py", "src/resnet.py", "src/loss.py", "src/utils.py")
NCCT_FILES = ("algorithm/noisyfer_aug_new_arch.py", "algorithm/loss.py", "model/cnn.py",
              "model/resnet.py", "common/utils.py")
EAC_LOADER_FILES = ("src/main.py", "src/dataset.py")
NCCT_LOADER_FILES = ("main_rafdb_new_arch.py", "algorithm/randaug.py")
OPTIONAL_DEPS = ("cv2", "sklearn.metrics", "matplotlib.pyplot", "tqdm")
LOADER_DEPS = ("cv2", "pandas", "torchvision", "PIL")
NUM_CLASSES = 7
# Which inputs each method's step takes, and so whose pipeline feeds it end to end.
FAMILY = {"ce": "ce", "ce_caffe50": "ce", "eac": "eac", "eac_r18": "eac", "ncct": "ncct"}
HEADER = ("| date | commit | devices | config | batch | input | img/s step only | img/s device "
          "path (x step) | img/s host path (x step) | img/s host alone | compile s | peak MiB |")


def _parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--official_dir", default=".official",
                 help="Folder holding eac/ and ncct/ (the extracted official repositories).")
  p.add_argument("--methods", default="ce,eac,ncct", help=f"Comma-separated, of {METHODS}.")
  p.add_argument("--batch_size", type=int, default=None,
                 help="Default 32; end to end, their main's default (EAC 32, NCCTFER 128).")
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
  p.add_argument("--end_to_end", action="store_true",
                 help="Also feed each step from their own Dataset and DataLoader (--raf_path).")
  p.add_argument("--raf_path", default="", help="RAF-DB-layout folder for --end_to_end.")
  p.add_argument("--workers", type=int, default=None,
                 help="DataLoader workers end to end; default their main's (4 for both).")
  p.add_argument("--eac_label_path", default="noise01.txt",
                 help="EAC's --label_path end to end: noise01.txt as their train.sh (the "
                 "noisy-label branch of RafDataset) or list_patition_label.txt (the clean one).")
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
  if args.batch_size is not None and args.batch_size < 1:
    p.error("--batch_size must be >= 1")
  if args.end_to_end:
    if not args.raf_path:
      p.error("--end_to_end needs --raf_path (a RAF-DB-layout folder)")
    if args.image_size != 224:
      p.error("--end_to_end: their train transforms resize to 224 px; use --image_size 224")
    if args.workers is not None and args.workers < 0:
      p.error("--workers must be >= 0")
    if not args.eac_label_path or pathlib.Path(args.eac_label_path).name != args.eac_label_path:
      p.error("--eac_label_path is a file name in <raf_path>/EmoLabel/")
    raf = pathlib.Path(args.raf_path).expanduser().resolve()
    if not (raf / "EmoLabel" / "list_patition_label.txt").is_file() or \
        not (raf / "Image" / "aligned").is_dir():
      p.error(f"--raf_path {raf}: no EmoLabel/list_patition_label.txt and Image/aligned/ "
              "(write one with python -m fer_jax.data.synthetic --raf_db_dir DIR)")
    args.raf_path = raf
    missing = [m for m in LOADER_DEPS if importlib.util.find_spec(m) is None]
    if missing:
      p.error(f"--end_to_end: their datasets need {', '.join(missing)} (not installed)")
  elif args.batch_size is None:
    args.batch_size = 32
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
  # A spec without an origin: importlib.util.find_spec (torch._dynamo's import-time probes of
  # third-party names, reached when torchvision is first imported) then sees no source to skip.
  module.__spec__ = importlib.machinery.ModuleSpec(name, None)

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
# The methods: each builder returns (step function, config text, cudnn.deterministic); the step
# takes the inputs of its FAMILY (_Setup.random_inputs, _Setup.loader_inputs)


@contextlib.contextmanager
def _argv(argv):
  """sys.argv set to `argv` (their main modules parse it at import); unchanged when None."""
  if argv is None:
    yield
    return
  saved = sys.argv
  sys.argv = list(argv)
  try:
    yield
  finally:
    sys.argv = saved


class _LoaderBuilt(Exception):
  """Raised in place of their main's first DataLoader, once its arguments are recorded."""


def _capture_train_loader(torch, run_main):
  """Runs their main() up to its first DataLoader call (the training loader) and returns that
  call's (dataset, positional args, keyword args); nothing after it in their main runs."""
  captured = {}
  real = torch.utils.data.DataLoader

  def record(dataset, *args, **kwargs):
    captured.update(dataset=dataset, args=args, kwargs=kwargs)
    raise _LoaderBuilt

  torch.utils.data.DataLoader = record
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      run_main()
  except _LoaderBuilt:
    pass
  finally:
    torch.utils.data.DataLoader = real
  if not captured:
    sys.exit("benchmark_torch: their main() returned without building a DataLoader")
  return captured["dataset"], captured["args"], captured["kwargs"]


def _batches(loader):
  """Batches of `loader` without end: each pass is one of their epochs (a fresh iterator, so
  new worker processes, as their `for ... in train_loader` loop gets every epoch)."""
  while True:
    yield from loader


class _Setup:
  def __init__(self, args):
    import torch

    self.torch = torch
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    self.device = torch.device(name)
    self.cuda = self.device.type == "cuda"
    self.args = args
    self.batch = args.batch_size
    self.fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    self._eac = self._ncct = self._view = None
    self._captured = {}

  def images(self):
    torch = self.torch
    s = self.args.image_size
    x = torch.randn(self.batch, 3, s, s, device=self.device)
    return x.contiguous(memory_format=self.fmt)

  def labels(self):
    return self.torch.randint(0, NUM_CLASSES, (self.batch,), device=self.device)

  def random_inputs(self, family):
    """The step's inputs as a random batch on the device (see FAMILY)."""
    if family == "ncct":
      return self.images(), self.images(), self.labels()
    x = self.images()
    if family == "ce":
      return x, self.labels()
    return x, x.flip(3).contiguous(memory_format=self.fmt), self.labels()

  def loader_inputs(self, family, batch):
    """The step's inputs from one batch of their DataLoader, moved with .to(device) in the order
    their loops move them (EAC: imgs1, imgs2, labels; NCCTFER: images_w, images_s, labels)."""
    def to(t):
      t = t.to(self.device)
      return t.contiguous(memory_format=self.fmt) if t.dim() == 4 else t

    if family == "ncct":  # RafDataSet.__getitem__: image1 (weak), image2 (strong), label, idx
      images_w, images_s, labels, _ = batch
      return to(images_w), to(images_s), to(labels)
    imgs1, labels, _, imgs2 = batch  # RafDataset.__getitem__: image, label, idx, image1
    if family == "ce":
      return to(imgs1), to(labels)
    imgs1, imgs2 = to(imgs1), to(imgs2)
    return imgs1, imgs2, to(labels)

  def model(self, module):
    return module.to(self.device, memory_format=self.fmt).train()

  def autocast(self):
    return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16, enabled=self.args.amp)

  def _main_argv(self, script, workers_flag, **flags):
    argv = [script]
    for k, v in flags.items():
      argv += [f"--{k}", str(v)]
    if self.args.batch_size is not None:
      argv += ["--batch_size", str(self.args.batch_size)]
    if self.args.workers is not None:
      argv += [workers_flag, str(self.args.workers)]
    return argv

  def raf_view(self, label_files):
    """--raf_path, or, when it lacks some of `label_files` (names in EmoLabel/), a temporary
    folder of links to its Image/ and EmoLabel/ files in which each missing label file is a link
    to list_patition_label.txt."""
    raf = self.args.raf_path
    missing = [f for f in label_files if not (raf / "EmoLabel" / f).is_file()]
    if not missing:
      return raf
    if self._view is None:
      self._view = pathlib.Path(tempfile.mkdtemp(prefix="benchmark_torch_raf_"))
      (self._view / "EmoLabel").mkdir()
      (self._view / "Image").symlink_to(raf / "Image")
      for f in (raf / "EmoLabel").iterdir():
        (self._view / "EmoLabel" / f.name).symlink_to(f)
    for f in missing:
      link = self._view / "EmoLabel" / f
      if not link.exists():
        link.symlink_to(raf / "EmoLabel" / "list_patition_label.txt")
    print(f"note: {raf} has no EmoLabel/{', EmoLabel/'.join(missing)}; their dataset reads "
          "list_patition_label.txt under that name", file=sys.stderr)
    return self._view

  def close(self):
    if self._view is not None:
      shutil.rmtree(self._view, ignore_errors=True)
      self._view = None

  def eac(self):
    if self._eac is None:
      root = self.args.official_dir / "eac"
      files, modules, argv = EAC_FILES, ["model", "loss", "utils"], None
      if self.args.end_to_end:  # their main.py parses its argv at import
        files, modules = files + EAC_LOADER_FILES, modules + ["dataset", "main"]
        label = self.args.eac_label_path
        argv = self._main_argv("main.py", "--workers", raf_path=self.raf_view([label]),
                               label_path=label)
      _check_files(root, files, "official EAC")
      with _argv(argv):
        self._eac = _import_official(root / "src", modules, "EAC")
      self._eac["commit"] = _official_commit(root)
    return self._eac

  def ncct(self):
    if self._ncct is None:
      root = self.args.official_dir / "ncct"
      files, argv = NCCT_FILES, None
      modules = ["algorithm.noisyfer_aug_new_arch", "common.utils"]
      if self.args.end_to_end:  # main_rafdb_new_arch.py parses its argv at import
        files, modules = files + NCCT_LOADER_FILES, modules + ["main_rafdb_new_arch"]
        view = self.raf_view(["train_label.txt", "test_label.txt"])
        argv = self._main_argv("main_rafdb_new_arch.py", "--num_workers", raf_path=view)
      _check_files(root, files, "official NCCTFER")
      visible = os.environ.get("CUDA_VISIBLE_DEVICES")
      try:
        with _argv(argv):
          self._ncct = _import_official(root, modules, "NCCTFER")
      finally:  # their module sets it from its --gpu (0) at import
        if visible is not None:
          os.environ["CUDA_VISIBLE_DEVICES"] = visible
      self._ncct["commit"] = _official_commit(root)
    return self._ncct

  def loader(self, family):
    """A DataLoader built with the dataset and the arguments of their main's training loader
    (EAC's for the ce and eac families, NCCTFER's for ncct), and the "input" text of the row."""
    import multiprocessing

    repo = "ncct" if family == "ncct" else "eac"
    if repo not in self._captured:
      if repo == "eac":
        run, what = self.eac()["main"].main, f"EAC RafDataset, {self.args.eac_label_path}"
      else:
        run, what = self.ncct()["main_rafdb_new_arch"].main, "NCCTFER RafDataSet"
      self._captured[repo] = _capture_train_loader(self.torch, run) + (what,)
    dataset, args, kwargs, what = self._captured[repo]
    loader = self.torch.utils.data.DataLoader(dataset, *args, **kwargs)
    if loader.num_workers and loader.multiprocessing_context is None and \
        multiprocessing.get_start_method() != "fork" and \
        "fork" in multiprocessing.get_all_start_methods():
      # Their dataset modules are imported from --official_dir, which spawned workers could not
      # import by name; fork is the start method of the Pythons their code ran on (Linux).
      loader = self.torch.utils.data.DataLoader(
        dataset, *args, **{**kwargs, "multiprocessing_context": "fork"})
      what += ", fork"
    text = f"their DataLoader, {loader.num_workers} workers ({what}, {len(dataset)} imgs)"
    return loader, text


def _adam(torch, params, lr):
  return torch.optim.Adam(params, lr=lr, weight_decay=1e-4)


def build_ce(s):
  import torchvision

  torch = s.torch
  model = s.model(torchvision.models.resnet18(num_classes=NUM_CLASSES))
  opt = _adam(torch, model.parameters(), 2e-4)
  criterion = torch.nn.CrossEntropyLoss()

  def step(x, y):
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
  totals = {"correct": 0, "loss": 0.0}

  def step(imgs1, imgs2, labels):
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
  criterion = torch.nn.CrossEntropyLoss()

  def step(x, y):
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
    batch_size=s.batch, lr=1e-3, lr2=1e-4, eps=0.35, warmup_epochs=4, alpha=0.5,
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
  totals = {"correct": 0}

  def step(images_w, images_s, labels):
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


def _sync(s):
  if s.cuda:
    s.torch.cuda.synchronize(s.device)


def _time_steps(s, step, inputs, warmup, steps):
  """(seconds of the first step, seconds per step) on the same inputs every step."""
  _sync(s)
  start = time.perf_counter()
  step(*inputs)
  _sync(s)
  first_s = time.perf_counter() - start
  for _ in range(warmup - 1):
    step(*inputs)
  _sync(s)
  start = time.perf_counter()
  for _ in range(steps):
    step(*inputs)
  _sync(s)
  return first_s, (time.perf_counter() - start) / steps


def _prefetched(loader):
  """How many batches their DataLoader's workers can hold ready (prefetch_factor each)."""
  return loader.num_workers * (loader.prefetch_factor or 2) if loader.num_workers else 0


def _time_fed_steps(s, step, family, loader, warmup, steps):
  """Images per second of (next batch of `loader` -> to the device -> step), timed over `steps`
  iterations after max(warmup, prefetched batches) untimed ones."""
  batches = _batches(loader)
  try:
    for _ in range(max(warmup, _prefetched(loader))):
      step(*s.loader_inputs(family, next(batches)))
    _sync(s)
    images = 0
    start = time.perf_counter()
    for _ in range(steps):
      inputs = s.loader_inputs(family, next(batches))
      images += inputs[-1].shape[0]  # the labels
      step(*inputs)
    _sync(s)
    return images / (time.perf_counter() - start)
  finally:
    batches.close()  # ends the epoch's iterator and its worker processes


def _time_loader(loader, steps):
  """Images per second of a fresh iterator of `loader` read without a step: its first
  max(1, prefetched) batches (worker start-up) untimed, then `steps` batches."""
  batches = _batches(loader)
  try:
    for _ in range(max(1, _prefetched(loader))):
      next(batches)
    images = 0
    start = time.perf_counter()
    for _ in range(steps):
      images += next(batches)[0].shape[0]
    return images / (time.perf_counter() - start)
  finally:
    batches.close()


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
  try:
    for method in args.methods:
      gc.collect()
      if s.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)
      family = FAMILY[method]
      loader, source = None, "random batch on the device"
      if args.end_to_end:
        loader, source = s.loader(family)
        s.batch = loader.batch_size  # theirs unless --batch_size was given
      torch.manual_seed(0)
      step, config, deterministic = BUILDERS[method](s)
      torch.backends.cudnn.deterministic = deterministic
      inputs = s.random_inputs(family)
      first_s, step_s = _time_steps(s, step, inputs, args.warmup, args.steps)
      del inputs
      b = s.batch
      fed = alone = "-"
      note = f"{method}: step only {b / step_s:.1f} img/s ({step_s * 1e3:.1f} ms/step)"
      if loader is not None:
        fed_rate = _time_fed_steps(s, step, family, loader, args.warmup, args.steps)
        alone_rate = _time_loader(loader, args.steps)
        fed = f"{fed_rate:.1f} ({fed_rate * step_s / b:.2f})"
        alone = f"{alone_rate:.1f}"
        note += f", fed by their DataLoader {fed_rate:.1f} img/s, loader alone {alone}"
      torch.backends.cudnn.deterministic = default_deterministic
      del step, loader
      memory, memory_kind = _peak_memory(s)
      config = f"{config} {args.image_size}px {dtype}{layout}"
      rows.append(f"| {datetime.date.today()} | {commit} | {devices} | {config} | {b} | "
                  f"{source} | {b / step_s:.1f} | - | {fed} | {alone} | "
                  f"{first_s:.1f} (first step) | {memory:.0f} ({memory_kind}) |")
      print(note, file=sys.stderr, flush=True)
  finally:
    s.close()
  print(HEADER)
  print("|" + " --- |" * HEADER.count(" | ") + " --- |")
  print("\n".join(rows))
  if args.write:
    with open(REPO / "docs" / "benchmarks.md", "a") as f:
      f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
  main()
