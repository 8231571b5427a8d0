"""``chexnet import``: foreign checkpoints read right, proved against the peer's own code.

Every file is built here as its authors' code writes it (never downloaded): torchxrayvision's models by
torchxrayvision itself (skipped when it is not installed), arnoweng/CheXNet's ``model.pth.tar`` and
jrzech/reproduce-chexnet's ``checkpoint`` as their ``model.py`` / ``train.py`` lay them out.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import densenet121, resnet50

from chexnet.core.labels import NIH14, LabelList
from chexnet.data.dataset import CachedImages
from chexnet.data.images import load_gray
from chexnet.data.input_spec import XRV_INPUT
from chexnet.engine import training
from chexnet.engine.inference import FP32, predict_images
from chexnet.model.file import load_model
from chexnet.model.initial import build_model
from chexnet.model.network import CheckpointError
from chexnet.model.sources import XRV_REGISTRY, import_checkpoint
from tests.helpers import run_cli

CPU = torch.device("cpu")


def _xray_like(path: Path, height: int, width: int, seed: int) -> Path:
    """A chest-film-like 8-bit image: bright mediastinum and ribs, dark lungs, noise; not square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    lungs = np.exp(-(((x - 0.3) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2))
    lungs += np.exp(-(((x - 0.7) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2))
    ribs = 0.5 + 0.5 * np.sin(40 * y + 8 * np.abs(x - 0.5))
    image = 200 - 120 * lungs + 25 * ribs * lungs + rng.normal(0, 8, (height, width))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


def _spread_head(linear: nn.Linear, features: torch.Tensor) -> None:
    """A random head scaled so the probabilities spread over (0, 1) instead of saturating."""
    with torch.no_grad():
        w = torch.randn(linear.out_features, linear.in_features)
        z = features @ w.T
        linear.weight.copy_(w / z.std())
        linear.bias.copy_(-z.mean(0) / z.std())


def _fire(linear: nn.Linear, unit: int) -> None:
    """A head that says "yes" on one unit only, whatever the image."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(-10.0)
        linear.bias[unit] = 10.0


# --- torchxrayvision -------------------------------------------------------------------------------
xrv = pytest.importorskip("torchxrayvision", reason="torchxrayvision (a test-time peer) is not installed")


def _xrv_pipeline(model: nn.Module, image: Path, size: int) -> np.ndarray:
    """torchxrayvision's README: imread, normalize(img, 255), one channel, XRayCenterCrop, XRayResizer."""
    import skimage.io
    import torchvision

    img = xrv.datasets.normalize(skimage.io.imread(image), 255)[None, ...]
    img = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)])(img)
    with torch.no_grad():
        return model(torch.from_numpy(img)[None]).numpy()[0]


def _ours(path: Path, image: Path) -> tuple[np.ndarray, object]:
    model, info = load_model(path)
    pixels = load_gray(image, info.image_size, info.input.resize, info.input.fill)
    return predict_images(model, pixels[None], CPU, FP32)[0], info


def test_the_vendored_registry_is_torchxrayvisions():
    for name, entry in XRV_REGISTRY["weights"].items():
        theirs = xrv.models.model_urls[name]
        assert (
            entry["labels"] == theirs["labels"] and entry["file"] == theirs["weights_url"].rsplit("/", 1)[1]
        )
        ops = [float("nan") if v is None else v for v in entry["op_threshs"]]
        np.testing.assert_array_equal(np.array(ops), np.array(theirs["op_threshs"], dtype=float))
        assert entry["input_resolution"] == theirs["input_resolution"]
    assert XRV_REGISTRY["default_pathologies"] == list(xrv.datasets.default_pathologies)


@pytest.fixture(scope="module")
def xrv_nih(tmp_path_factory) -> tuple[Path, Path, nn.Module]:
    """torchxrayvision's own DenseNet with its published 'nih' weights name, from a file written by
    torch.save(model) as its releases are, and loaded back by torchxrayvision itself from its cache."""
    folder = tmp_path_factory.mktemp("xrv")
    torch.manual_seed(0)
    net = xrv.models.DenseNet(num_classes=18).eval()
    with torch.no_grad():
        _spread_head(net.classifier, net.features2(torch.randn(4, 1, 224, 224) * 400))
    published = folder / XRV_REGISTRY["weights"]["densenet121-res224-nih"]["file"]
    torch.save(net, published)
    theirs = xrv.models.DenseNet(weights="densenet121-res224-nih", cache_dir=str(folder)).eval()
    out = folder / "nih.pth"
    import_checkpoint(published, out)
    return published, out, theirs


def test_torchxrayvision_densenet_equals_its_own_pipeline(xrv_nih, tmp_path: Path):
    _, out, theirs = xrv_nih
    record = json.loads(out.with_suffix(".json").read_text())
    names = XRV_REGISTRY["weights"]["densenet121-res224-nih"]["labels"]
    trained = [n for n in names if n]  # 14: the 4 outputs with NaN op_threshs (never trained) left out
    assert (
        record["labels"] == trained and record["input"] == XRV_INPUT.as_dict() and record["image_size"] == 224
    )
    assert record["origin"]["format"] == "torchxrayvision" and record["origin"]["weights_name"].endswith(
        "nih"
    )
    assert len(record["origin"]["outputs_left_out"]) == 4
    ops = dict(zip(names, xrv.models.model_urls["densenet121-res224-nih"]["op_threshs"], strict=True))
    assert record["thresholds"]["values"] == pytest.approx({n: ops[n] for n in trained})
    for k, (h, w) in enumerate([(300, 260), (512, 512), (224, 300)]):
        image = _xray_like(tmp_path / f"x{k}.png", h, w, seed=k)
        ours, info = _ours(out, image)
        theirs.op_threshs, theirs.apply_sigmoid = None, True  # the raw probabilities
        raw = dict(zip(names, _xrv_pipeline(theirs, image, 224), strict=True))
        np.testing.assert_allclose(ours, [raw[n] for n in trained], atol=1e-4)
        assert ours.std() > 0.05  # spread out: a wrong input would show
        theirs.op_threshs = torch.tensor(xrv.models.model_urls["densenet121-res224-nih"]["op_threshs"])
        normed = dict(zip(names, _xrv_pipeline(theirs, image, 224), strict=True))  # op_norm: 0.5 = cut
        cut = info.thresholds["values"]
        assert [ours[j] >= cut[n] for j, n in enumerate(trained)] == [normed[n] >= 0.5 for n in trained]


def test_imagenet_rgb_input_would_have_been_wrong(xrv_nih, tmp_path: Path):
    """The reason the record carries the input rule: the seed's transform gives other probabilities."""
    _, out, _ = xrv_nih
    image = _xray_like(tmp_path / "x.png", 300, 260, seed=0)
    ours, _ = _ours(out, image)
    model, _ = load_model(out)
    from chexnet.data.dataset import normalize_batch

    rgb = normalize_batch(torch.from_numpy(np.array(load_gray(image, 224)))[None, None], CPU)[
        :, :1
    ]  # ImageNet-scaled
    with torch.no_grad():
        wrong = model(rgb)[0].numpy()
    assert np.abs(wrong - ours).max() > 0.05


def test_torchxrayvision_resnet50_state_dict_equals_its_own_pipeline(tmp_path: Path):
    """resnet50-res512-all is published as torchvision ResNet50's state_dict with one input channel."""
    torch.manual_seed(1)
    net = resnet50(num_classes=18)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.eval()
    body = nn.Sequential(*list(net.children())[:-1])
    with torch.no_grad():
        _spread_head(net.fc, torch.flatten(body(torch.randn(2, 1, 512, 512) * 400), 1))
    entry = XRV_REGISTRY["weights"]["resnet50-res512-all"]
    published = tmp_path / entry["file"]
    torch.save(net.state_dict(), published)
    theirs = xrv.models.ResNet(weights="resnet50-res512-all", cache_dir=str(tmp_path)).eval()
    info = import_checkpoint(published, tmp_path / "r.pth")
    assert info.architecture == "resnet50" and info.image_size == 512 and len(info.labels) == 16  # 2 NaN
    image = _xray_like(tmp_path / "x.png", 600, 540, seed=3)
    ours, _ = _ours(tmp_path / "r.pth", image)
    theirs.op_threshs, theirs.apply_sigmoid = None, True
    raw = dict(zip(entry["labels"], _xrv_pipeline(theirs, image, 512), strict=True))
    np.testing.assert_allclose(ours, [raw[n] for n in info.labels.names], atol=1e-4)


def tiny_fit(tmp_path: Path, model: nn.Module, outputs: int) -> list:
    """One epoch on 16 random 32 px images: the training loop runs this network end to end."""
    rng = np.random.default_rng(0)
    labels = (rng.random((16, outputs)) < 0.4).astype(np.float32)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (16, 32, 32), dtype=np.uint8))
    dataset = CachedImages(tmp_path, np.arange(16), labels)
    options = training.TrainOptions(epochs=1, batch_size=8, seed=7)
    return training.fit(model, dataset, dataset, options, run_fingerprint="test").history


def test_fine_tuning_a_torchxrayvision_model_onto_the_seeds_portuguese_labels(xrv_nih, tmp_path, caplog):
    _, out, _ = xrv_nih
    labels = LabelList(("Atelectasia", "Derrame", "Nódulo"), "from_data")
    caplog.set_level(logging.INFO, logger="chexnet.model")
    model, pretrained = build_model(str(out), labels)
    source, _ = load_model(out)
    assert pretrained and model.input_spec == XRV_INPUT and model.head.out_features == 3
    assert torch.equal(model.features.conv0.weight, source.features.conv0.weight)  # one-channel backbone kept
    assert "head rows copied for 0 shared findings" in caplog.text
    before = model.features.conv0.weight.detach().clone()
    history = tiny_fit(tmp_path, model, 3)
    assert math.isfinite(history[-1].train_loss) and not torch.equal(before, model.features.conv0.weight)


# --- arnoweng/CheXNet and jrzech/reproduce-chexnet ------------------------------------------------
def _legacy_names(state: dict) -> OrderedDict:
    """torchvision 0.2's DenseNet said norm.1 / conv.2 and PyTorch 0.3 had no num_batches_tracked."""
    out = OrderedDict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for new, old in (
            ("norm1.", "norm.1."),
            ("norm2.", "norm.2."),
            ("conv1.", "conv.1."),
            ("conv2.", "conv.2."),
        ):
            if ".denselayer" in key:
                key = key.replace(f".{new}", f".{old}")
        out[key] = value
    return out


class _ArnowengDenseNet121(nn.Module):
    """arnoweng/CheXNet model.py: ``self.densenet121`` with ``classifier = Sequential(Linear, Sigmoid)``."""

    def __init__(self, out_size: int):
        super().__init__()
        self.densenet121 = densenet121(weights=None)
        self.densenet121.classifier = nn.Sequential(nn.Linear(1024, out_size), nn.Sigmoid())


def test_arnoweng_model_pth_tar_reports_its_units_under_chexnets_names(tmp_path: Path):
    model = nn.DataParallel(_ArnowengDenseNet121(14))  # trained under DataParallel: module. prefix
    _fire(model.module.densenet121.classifier[0], NIH14.index("Nodule"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 7, "state_dict": _legacy_names(model.state_dict()), "best_loss": 0.15,
                "optimizer": optimizer.state_dict()}, path)  # fmt: skip
    result = run_cli("import", str(path), "--out", str(tmp_path / "a.pth"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["origin"]["format"] == "arnoweng"
    net, info = load_model(tmp_path / "a.pth")
    fired = info.labels.names[int(net.eval()(torch.randn(1, 3, 224, 224)).argmax())]
    assert fired == "Nodule" and info.labels.names == NIH14


def _jrzech_checkpoint(path: Path, unit: int, legacy: bool) -> None:
    """jrzech/reproduce-chexnet: ``torch.save({'model': model, 'best_loss', 'epoch', 'rng_state', 'LR'})``
    with the whole torchvision DenseNet object; ``legacy``: its torchvision 0.2 module names."""
    model = densenet121(weights=None)
    model.classifier = nn.Sequential(nn.Linear(1024, 14), nn.Sigmoid())
    _fire(model.classifier[0], unit)
    if legacy:
        for module in model.modules():
            if type(module).__name__ == "_DenseLayer":
                module._modules = OrderedDict((n.replace("1", ".1").replace("2", ".2"), m)
                                              for n, m in module._modules.items())  # fmt: skip
    state = {"model": model, "best_loss": 0.2, "epoch": 4, "rng_state": torch.get_rng_state(), "LR": 0.01}
    torch.save(state, path)


@pytest.mark.parametrize("legacy", [False, True])
def test_jrzech_whole_model_pickle_is_read_without_running_code(tmp_path: Path, legacy: bool):
    _jrzech_checkpoint(tmp_path / "checkpoint", NIH14.index("Edema"), legacy)
    info = import_checkpoint(tmp_path / "checkpoint", tmp_path / "j.pth")
    assert info.origin["format"] == "jrzech" and len(info.origin["sha256"]) == 64
    net, info = load_model(tmp_path / "j.pth")
    assert info.labels.names[int(net.eval()(torch.randn(1, 3, 224, 224)).argmax())] == "Edema"


# --- refusals ---------------------------------------------------------------------------------------
class NotAllowed(nn.Module):
    """A user's own class: a pickle holding it could hold anything."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Payload.target}",))


def test_a_pickle_with_a_class_not_on_the_allow_list_is_refused_naming_it(tmp_path: Path):
    torch.save({"model": NotAllowed()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"tests\.unit\.model\.test_import\.NotAllowed.*would run code"):
        import_checkpoint(tmp_path / "c.pt", tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_a_reduce_payload_is_refused_and_never_runs(tmp_path: Path):
    Payload.target = tmp_path / "pwned"
    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"(posix|os|nt)\.system"):
        import_checkpoint(tmp_path / "evil.pth", tmp_path / "out.pth")
    assert not Payload.target.exists()


def test_keys_that_do_not_all_map_are_refused_listing_them(tmp_path: Path):
    model = densenet121(weights=None)
    model.classifier = nn.Sequential(nn.Linear(1024, 14), nn.Sigmoid())
    state = model.state_dict()
    state["features.extra_block.weight"] = torch.zeros(3)
    del state["features.denseblock4.denselayer16.conv2.weight"]
    torch.save(state, tmp_path / "partial.pth")
    result = run_cli("import", str(tmp_path / "partial.pth"), "--out", str(tmp_path / "p.pth"),
                     "--labels", ",".join(NIH14))  # fmt: skip
    assert result.returncode == 1
    assert "features.denseblock4.denselayer16.conv2.weight" in result.stderr
    assert "features.extra_block.weight" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.pth").exists()


def test_a_seed_state_dict_takes_its_labels_from_the_user(tmp_path: Path):
    model = densenet121(weights=None)
    model.classifier = nn.Sequential(nn.Linear(1024, 3), nn.Sigmoid())
    _fire(model.classifier[0], 1)
    torch.save(model.state_dict(), tmp_path / "seed.pth")
    result = run_cli("import", str(tmp_path / "seed.pth"), "--out", str(tmp_path / "s.pth"),
                     "--labels", "Derrame,Nódulo,Massa")  # fmt: skip
    assert result.returncode == 0, result.stderr
    net, info = load_model(tmp_path / "s.pth")
    assert info.labels.names[int(net.eval()(torch.randn(1, 3, 64, 64)).argmax())] == "Nódulo"
    result = run_cli("import", str(tmp_path / "seed.pth"), "--out", str(tmp_path / "t.pth"))
    assert result.returncode == 1 and "--labels" in result.stderr  # 3 outputs: no list to guess


def test_a_torchvision_imagenet_file_imports_as_a_backbone_to_fine_tune(tmp_path: Path):
    reference = resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet50-11ad3fa6.pth")
    info = import_checkpoint(tmp_path / "resnet50-11ad3fa6.pth", tmp_path / "r.pth")
    assert info.architecture == "resnet50" and len(info.labels) == 1000
    model, pretrained = build_model(str(tmp_path / "r.pth"), LabelList(("Derrame", "Nódulo"), "from_data"))
    assert pretrained and torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
