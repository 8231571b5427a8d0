from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import densenet121

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import NIH14, LabelList, LabelMismatchError
from chexnet.engine.inference import resolve_device
from chexnet.model import initial
from chexnet.model.file import ModelInfo, load_model, save_model
from chexnet.model.initial import build_model
from chexnet.model.network import CheckpointError, CheXNet, LayerError, check_target_layer, resolve_layer


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
    ours, info = load_model(tmp_path / "chexnet_model.pth")
    ours.eval()
    assert info.source == "seed" and info.labels.names == tuple(sorted(NIH14)) and info.image_size is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), seed_model.eval()(x), atol=1e-6)


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path):
    other = densenet121(weights=None)  # a plain Linear head: classifier.weight, not classifier.0.weight
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"classifier\.0\.weight.*classifier\.weight"):
        load_model(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "absent.pth")


def test_offline_imagenet_falls_back_to_random_init_with_one_warning(monkeypatch, caplog):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(initial, "get_model", offline)
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


def _seed_checkpoint(path: Path, firing_unit: int, outputs: int = 14) -> None:
    """A seed-format checkpoint whose head fires on one unit only, whatever the image."""
    seed_model = densenet121(weights=None)
    seed_model.classifier = nn.Sequential(nn.Linear(1024, outputs), nn.Sigmoid())
    with torch.no_grad():
        seed_model.classifier[0].weight.zero_()
        seed_model.classifier[0].bias.fill_(-10.0)
        seed_model.classifier[0].bias[firing_unit] = 10.0
    torch.save(seed_model.state_dict(), path)


def test_a_seed_checkpoint_is_read_in_sorted_order(tmp_path: Path, caplog):
    _seed_checkpoint(tmp_path / "seed.pth", firing_unit=2)  # unit 2 of sorted NIH names: Consolidation
    with caplog.at_level(logging.INFO, logger="chexnet.model"):
        net, info = load_model(tmp_path / "seed.pth")
    fired = info.labels.names[int(net.eval()(torch.randn(1, 3, 64, 64)).argmax())]
    assert fired == "Consolidation" != NIH14[2]  # CheXNet's order would have called it Effusion
    assert any("seed's checkpoint" in r.getMessage() and "sorted" in r.getMessage() for r in caplog.records)
    given = LabelList(("A", "B", "Consolidação", *"DEFGHIJKLMN"), "given")
    assert load_model(tmp_path / "seed.pth", given)[1].labels.names[2] == "Consolidação"
    _seed_checkpoint(tmp_path / "five.pth", firing_unit=0, outputs=5)
    with pytest.raises(LabelMismatchError, match="5 outputs and no label list"):
        load_model(tmp_path / "five.pth")
    with pytest.raises(LabelMismatchError, match="5 outputs but its label list has 14"):
        load_model(tmp_path / "five.pth", LabelList(NIH14, "given"))


def test_our_checkpoint_carries_its_labels_and_size(tmp_path: Path):
    labels = LabelList(("Derrame", "Nódulo", "Massa"), "from_data")
    save_model(tmp_path / "m.pth", CheXNet(3).state_dict(), ModelInfo(labels, 96))
    net, info = load_model(tmp_path / "m.pth")
    assert info.labels == labels and info.image_size == 96 and net.classifier[0].out_features == 3
    with pytest.raises(LabelMismatchError, match="differ from"):
        load_model(tmp_path / "m.pth", LabelList(("Massa", "Nódulo", "Derrame"), "given"))


def test_fine_tuning_across_label_lists_copies_exactly_the_shared_rows(tmp_path: Path, caplog):
    torch.manual_seed(0)
    source = CheXNet(14)
    save_model(tmp_path / "nih.pth", source.state_dict(), ModelInfo(LabelList(NIH14, "nih14"), 224))
    target = LabelList(("Edema", "Fratura", "Mass", "Nódulo"), "explicit")
    torch.manual_seed(1)
    fresh = CheXNet(len(target)).classifier[0]
    torch.manual_seed(1)  # the same fresh initialisation inside build_model
    with caplog.at_level(logging.INFO, logger="chexnet.model"):
        net, pretrained = build_model(str(tmp_path / "nih.pth"), target)
    head, old = net.classifier[0], source.classifier[0]
    assert pretrained and head.out_features == 4
    for name, row in (("Edema", 0), ("Mass", 2)):
        assert torch.equal(head.weight[row], old.weight[NIH14.index(name)])
        assert torch.equal(head.bias[row], old.bias[NIH14.index(name)])
    for row in (1, 3):  # not in the checkpoint: fresh, not copied from any row
        assert torch.equal(head.weight[row], fresh.weight[row])
    assert torch.equal(net.features.conv0.weight, source.features.conv0.weight)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "['Edema', 'Mass']" in message and "Fratura" in message


def test_a_model_is_built_with_the_fit_its_training_images_had():
    """The train stage gives ``build_model`` the cache's ``data.resize``: the network's input rule says it
    from construction (it used to be patched onto the module afterwards), whatever the rule it starts with."""
    built, _ = build_model("none", resize="center_crop")
    assert built.input_spec.resize == "center_crop" and built.input_spec.channels == 3
    assert build_model("none")[0].input_spec.resize == "square"


# --- devices, layers ------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:7", "mps", "tpu"])
def test_a_device_this_machine_lacks_is_refused_in_one_line(name: str):
    with pytest.raises(ChexnetError, match=rf"device '{name}'"):
        resolve_device(name)


@pytest.mark.parametrize("spec", ["nope", "features[99]", "classifier", "classifier[0]", "features..x"])
def test_a_target_layer_that_names_no_spatial_layer_is_refused(spec: str):
    with pytest.raises(LayerError, match="target layer"):
        check_target_layer(CheXNet(3), spec)
