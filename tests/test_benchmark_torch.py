"""scripts/benchmark_torch.py's end-to-end plumbing, without the official code or torchvision."""

import argparse
import importlib.util
import pathlib

import pytest

torch = pytest.importorskip("torch")

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "benchmark_torch.py"


@pytest.fixture(scope="module")
def bt():
  spec = importlib.util.spec_from_file_location("benchmark_torch_under_test", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _raf(root):
  (root / "EmoLabel").mkdir(parents=True)
  (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\ntest_0001.jpg 2\n")
  (root / "Image" / "aligned").mkdir(parents=True)
  return root


def _setup(bt, raf=None):
  args = argparse.Namespace(device="cpu", channels_last=False, batch_size=4, image_size=8,
                            amp=False, raf_path=raf)
  return bt._Setup(args)


def test_arguments(bt, tmp_path):
  assert bt._parse_args([]).batch_size == 32
  raf = _raf(tmp_path / "raf")
  for bad in (["--end_to_end"],
              ["--end_to_end", "--raf_path", str(raf), "--image_size", "112"],
              ["--end_to_end", "--raf_path", str(tmp_path)],  # no RAF-DB layout
              ["--end_to_end", "--raf_path", str(raf), "--eac_label_path", "../noise01.txt"]):
    with pytest.raises(SystemExit):
      bt._parse_args(bad)


def test_capture_stops_their_main_at_the_train_loader(bt):
  real = torch.utils.data.DataLoader
  dataset = torch.utils.data.TensorDataset(torch.arange(10))

  def their_main():
    torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=0,
                                pin_memory=True, drop_last=True)
    raise AssertionError("ran past its training loader")

  got, args, kwargs = bt._capture_train_loader(torch, their_main)
  assert got is dataset and args == ()
  assert kwargs == {"batch_size": 3, "shuffle": True, "num_workers": 0, "pin_memory": True,
                    "drop_last": True}
  assert torch.utils.data.DataLoader is real


def test_raf_view_links_missing_label_files(bt, tmp_path):
  raf = _raf(tmp_path / "raf")
  s = _setup(bt, raf)
  assert s.raf_view(["list_patition_label.txt"]) == raf
  view = s.raf_view(["noise01.txt"])
  assert view != raf and s.raf_view(["train_label.txt"]) == view
  listing = (raf / "EmoLabel" / "list_patition_label.txt").read_text()
  for name in ("noise01.txt", "train_label.txt", "list_patition_label.txt"):
    assert (view / "EmoLabel" / name).read_text() == listing
  assert (view / "Image" / "aligned").is_dir()
  s.close()
  assert not view.exists() and raf.exists()


class _EacLike(torch.utils.data.Dataset):
  """Items shaped as EAC's RafDataset returns them: image, label, idx, second view."""

  def __len__(self):
    return 10

  def __getitem__(self, idx):
    image = torch.full((3, 8, 8), float(idx))
    return image, idx % 7, idx, image.flip(2)


def test_fed_steps_run_across_epochs(bt):
  s = _setup(bt)
  loader = torch.utils.data.DataLoader(_EacLike(), batch_size=4, shuffle=True)  # 4, 4, 2
  seen = []

  def step(imgs1, imgs2, labels):
    assert imgs1.shape == imgs2.shape and torch.equal(imgs1.flip(3), imgs2)
    seen.append(labels.shape[0])

  assert bt._time_fed_steps(s, step, "eac", loader, warmup=2, steps=5) > 0
  assert len(seen) == 7 and sum(seen) == 24  # two epochs and a batch
  ce_inputs = s.loader_inputs("ce", next(iter(loader)))
  assert len(ce_inputs) == 2 and ce_inputs[0].shape == (4, 3, 8, 8)
  assert bt._time_loader(loader, steps=3) > 0
