"""Converter: parity with PyTorch, checkpoint formats, loud failures."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from fer_jax import inference  # noqa: E402
from fer_jax.data import pipeline  # noqa: E402
from fer_jax.models import (  # noqa: E402
  resnet,
  torch_convert,  # noqa: E402
  torch_files,
  weights,
)
from tests import torch_resnet  # noqa: E402


def _flax_logits(model_dir, x_nchw):
  model, variables, _ = inference.load_model(model_dir)
  return np.asarray(model.apply(variables, jnp.asarray(x_nchw.transpose(0, 2, 3, 1)),
                                train=False)[0])


@pytest.mark.parametrize("arch,size", [("resnet18", 224), ("resnet50", 32)])
def test_trained_fer_model_gives_pytorch_logits(tmp_path, arch, size):
  """A whole FER model (backbone + 7-way fc) saved from DataParallel (`module.` prefix)."""
  ref = torch_resnet.make(arch, 7)
  src = tmp_path / "fer.pth"
  torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, src)
  meta = torch_convert.convert(str(src), tmp_path / "out")
  assert meta["arch"] == arch and meta["has_head"]
  x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    expected = ref(x).numpy()
  got = _flax_logits(tmp_path / "out", x.numpy())
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_msceleb_format_keeps_backbone_drops_1000_way_fc(tmp_path):
  ref = torch_resnet.make("resnet18", 1000, width=16)
  src = tmp_path / "resnet18_msceleb.pth"
  torch.save({"epoch": 10, "state_dict": ref.state_dict()}, src)
  meta = torch_convert.convert(str(src), tmp_path / "out")
  assert not meta["has_head"] and meta["width"] == 16
  variables, _ = weights.load(tmp_path / "out")
  assert "head" not in variables["params"]
  # The backbone's pooled features equal PyTorch's input to fc.
  model = resnet.Classifier("resnet18", 7, 16)
  x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
  init = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  merged = weights.merge(init, variables, source="test")
  _, feats = model.apply(merged, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
  with torch.no_grad():
    h = ref.maxpool(torch.relu(ref.bn1(ref.conv1(x))))
    for i in range(1, 5):
      h = getattr(ref, f"layer{i}")(h)
  np.testing.assert_allclose(feats["pre_logits"], h.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
  # Predicting needs a head: a clear error, not random outputs.
  with pytest.raises(ValueError, match="no classifier head"):
    inference.load_model(tmp_path / "out")


def test_bare_state_dict_and_torch_free_reader_agree(tmp_path):
  ref = torch_resnet.make("resnet18", 8, width=8)
  src = tmp_path / "bare.pt"
  torch.save(ref.state_dict(), src)
  loaded = torch_files.load(src)
  for k, v in ref.state_dict().items():
    np.testing.assert_array_equal(loaded[k], v.numpy())
  names = [f"c{i}" for i in range(8)]
  meta = torch_convert.convert(str(src), tmp_path / "out", class_names=names, image_size=112,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  assert meta["has_head"] and meta["class_names"] == names and meta["image_size"] == 112


def test_missing_and_misshaped_keys_fail_loudly(tmp_path):
  sd = torch_resnet.make("resnet18", 7, width=8).state_dict()
  missing = {k: v for k, v in sd.items() if not k.startswith("layer3.1.bn2")}
  torch.save(missing, tmp_path / "missing.pth")
  with pytest.raises(ValueError, match=r"(?s)missing\.pth: does not fit.*missing params/backbone/layer3_1/bn2/scale"):
    torch_convert.convert(str(tmp_path / "missing.pth"), tmp_path / "a")
  bad = dict(sd, **{"layer1.0.conv1.weight": torch.zeros(8, 8, 1, 1)})
  torch.save(bad, tmp_path / "bad.pth")
  with pytest.raises(ValueError, match="layer1_0/conv1/kernel: shape"):
    torch_convert.convert(str(tmp_path / "bad.pth"), tmp_path / "b")
  stray = dict(sd, **{"projection.weight": torch.zeros(4, 4)})
  torch.save(stray, tmp_path / "stray.pth")
  with pytest.raises(ValueError, match="projection.weight"):
    torch_convert.convert(str(tmp_path / "stray.pth"), tmp_path / "c")
  assert not any((tmp_path / d).exists() for d in "abc")


def test_existing_model_directory_is_not_overwritten(tmp_path):
  torch.save(torch_resnet.make("resnet18", 7, width=8).state_dict(), tmp_path / "m.pth")
  torch_convert.convert(str(tmp_path / "m.pth"), tmp_path / "out")
  before = (tmp_path / "out" / weights.VARIABLES).read_bytes()
  with pytest.raises(FileExistsError, match="already holds a model"):
    torch_convert.convert(str(tmp_path / "m.pth"), tmp_path / "out")
  assert (tmp_path / "out" / weights.VARIABLES).read_bytes() == before


def test_init_from_loads_converted_backbone_into_training_state(tmp_path):
  from configs import baseline
  from fer_jax import optim, train

  torch.save({"state_dict": torch_resnet.make("resnet18", 1000, width=8).state_dict()},
             tmp_path / "msceleb.pth")
  torch_convert.convert(str(tmp_path / "msceleb.pth"), tmp_path / "w")
  config = baseline.get_config("runlocal=true")
  config.init_from = str(tmp_path / "w")
  method = train.get_method(config)
  model = method.build_model(config)
  tx, _ = optim.make(config.optimizer, 10, 100)
  mesh = train.create_mesh()
  state = train.create_state(config, model, tx, method, 10, jax.random.key(0),
                             jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  loaded, _ = weights.load(tmp_path / "w")
  np.testing.assert_array_equal(state.params["backbone"]["conv1"]["kernel"],
                                loaded["params"]["backbone"]["conv1"]["kernel"])
  np.testing.assert_array_equal(state.batch_stats["backbone"]["bn1"]["var"],
                                loaded["batch_stats"]["backbone"]["bn1"]["var"])
  assert pipeline.IMAGENET_MEAN == tuple(weights.load(tmp_path / "w")[1]["mean"])


def test_vggface2_pickle_gives_the_caffe_resnet50(tmp_path):
  """EAC's resnet50_ft_weight.pkl: a latin1 pickle of numpy arrays, Caffe-style ResNet-50
  (stride on the first 1x1, ceil-mode max-pool without padding), 8631-way fc dropped."""
  import pickle

  ref = torch_resnet.make("resnet50_caffe", 8631, width=8)
  src = tmp_path / "resnet50_ft_weight.pkl"
  with open(src, "wb") as f:
    pickle.dump({k: v.numpy() for k, v in ref.state_dict().items()
                 if not k.endswith("num_batches_tracked")}, f, protocol=2)
  meta = torch_convert.convert(str(src), tmp_path / "out")
  assert meta["arch"] == "resnet50_caffe" and not meta["has_head"]
  variables, _ = weights.load(tmp_path / "out")
  # 66 px: odd maps after the stem (33), where ceil-mode pooling and padding 1 disagree.
  x = torch.randn(2, 3, 66, 66, generator=torch.Generator().manual_seed(3))
  model = resnet.Classifier("resnet50_caffe", 7, 8)
  merged = weights.merge(model.init(jax.random.key(0), jnp.zeros((1, 66, 66, 3))), variables,
                         source="test")
  _, feats = model.apply(merged, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
  with torch.no_grad():
    h = ref.maxpool(torch.relu(ref.bn1(ref.conv1(x))))
    for i in range(1, 5):
      h = getattr(ref, f"layer{i}")(h)
  assert feats["stage4"].shape[1:3] == h.shape[2:]
  np.testing.assert_allclose(feats["pre_logits"], h.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
  # The torchvision layout gives different features from the same weights.
  plain = resnet.Classifier("resnet50", 7, 8).apply(merged, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))[1]
  assert np.abs(np.asarray(plain["pre_logits"]) - h.mean((2, 3)).numpy()).max() > 1e-3


def test_res18_naive_format_drops_the_dream_feature_layer(tmp_path):
  """SCN/DNFER/NCCTFER's res18_naive.pth_MSceleb.tar: `module.` keys plus DREAM's 512->256
  `feature` Linear and an fc on top of it; the backbone must come through whole."""
  ref = torch_resnet.make("resnet18", 7, width=8)
  backbone = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
  extra = {"feature.weight": torch.zeros(256, 64), "feature.bias": torch.zeros(256),
           "fc.weight": torch.zeros(1000, 256), "fc.bias": torch.zeros(1000)}
  src = tmp_path / "res18_naive.pth_MSceleb.tar"
  torch.save({"state_dict": {f"module.{k}": v for k, v in {**backbone, **extra}.items()}}, src)
  meta = torch_convert.convert(str(src), tmp_path / "out")
  assert meta["arch"] == "resnet18" and not meta["has_head"]
  variables, _ = weights.load(tmp_path / "out")
  np.testing.assert_array_equal(variables["params"]["backbone"]["conv1"]["kernel"],
                                backbone["conv1.weight"].numpy().transpose(2, 3, 1, 0))
