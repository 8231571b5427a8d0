import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import densenet121

from chexnet import model as model_module
from chexnet.model import CheckpointError, CheXNet, build_model, load_checkpoint, resolve_layer


def test_outputs_are_probabilities_of_the_logits():
    torch.manual_seed(0)
    net = CheXNet().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), torch.sigmoid(net.logits(x)))
    assert net(x).shape == (2, 14)


def test_seed_format_state_dict_loads(tmp_path: Path):
    """The seed's own code: torchvision densenet121 with classifier = Sequential(Linear, Sigmoid)."""
    seed_model = densenet121(weights=None)
    seed_model.classifier = nn.Sequential(nn.Linear(seed_model.classifier.in_features, 14), nn.Sigmoid())
    torch.save(seed_model.state_dict(), tmp_path / "chexnet_model.pth")
    ours = load_checkpoint(CheXNet(), tmp_path / "chexnet_model.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), seed_model.eval()(x), atol=1e-6)


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path):
    other = densenet121(weights=None)  # a plain Linear head: classifier.weight, not classifier.0.weight
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"classifier\.0\.weight.*classifier\.weight"):
        load_checkpoint(CheXNet(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(CheXNet(), tmp_path / "absent.pth")


def test_offline_imagenet_falls_back_to_random_init_with_one_warning(monkeypatch, caplog):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(model_module, "densenet121", offline)
    with caplog.at_level(logging.WARNING, logger="chexnet.model"):
        net, pretrained = build_model("imagenet")
    assert pretrained is False and isinstance(net, CheXNet)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "densenet121-a639ec97.pth" in warnings[0].getMessage()


def test_local_imagenet_file_with_legacy_keys_loads_the_backbone(tmp_path: Path):
    reference = densenet121(weights=None)
    legacy = {}
    for key, value in reference.state_dict().items():  # torchvision's published file says norm.1, not norm1
        legacy[key.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.")] = value
    torch.save(legacy, tmp_path / "densenet121-a639ec97.pth")
    net, pretrained = build_model(str(tmp_path / "densenet121-a639ec97.pth"))
    assert pretrained
    assert torch.equal(net.features.conv0.weight, reference.features.conv0.weight)
    assert torch.equal(
        net.features.denseblock1.denselayer1.norm1.weight,
        reference.features.denseblock1.denselayer1.norm1.weight,
    )


def test_resolve_layer():
    net = CheXNet()
    assert resolve_layer(net, "features[-1]") is net.features.norm5
    assert resolve_layer(net, "features.denseblock4") is net.features.denseblock4
    with pytest.raises(ValueError, match="does not exist"):
        resolve_layer(net, "features.nope")
