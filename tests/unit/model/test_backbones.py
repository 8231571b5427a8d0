"""Backbones by name, and evaluate-only runs of a model file as it is."""

from __future__ import annotations

import json
import logging
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelList, LabelMismatchError
from chexnet.data.dataset import CachedImages
from chexnet.engine import given, training
from chexnet.explain import cam
from chexnet.model import initial
from chexnet.model.file import ModelInfo, load_model, save_model
from chexnet.model.initial import build_model, planned_architecture
from chexnet.model.network import (
    ArchitectureError,
    CheXResNet50,
    LayerError,
    build_network,
    check_target_layer,
)
from chexnet.pipeline.check import check

LABELS = LabelList(("Derrame", "Nódulo", "Massa"), "from_data")
CPU = torch.device("cpu")


def _cache(folder: Path, outputs: int = 3, n: int = 16, size: int = 32) -> CachedImages:
    rng = np.random.default_rng(0)
    labels = (rng.random((n, outputs)) < 0.4).astype(np.float32)
    np.save(folder / "images.npy", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
    return CachedImages(folder, np.arange(n), labels)


def test_resnet50_trains_saves_reloads_and_explains(tmp_path: Path):
    model, pretrained = build_model("none", LABELS, "resnet50")
    assert isinstance(model, CheXResNet50) and not pretrained and model.head.out_features == 3
    assert check_target_layer(model, "auto") == "layer4"
    with pytest.raises(LayerError, match="layer4"):
        check_target_layer(model, "features[-1]")  # DenseNet's layer: refused with ResNet50's names
    dataset = _cache(tmp_path)
    result = training.fit(model, dataset, dataset, training.TrainOptions(epochs=1, batch_size=8, seed=7))
    assert np.isfinite(result.history[-1].train_loss)
    save_model(tmp_path / "r.pth", result.best_state, ModelInfo(LABELS, 32, architecture="resnet50"))
    assert set(torch.load(tmp_path / "r.pth", weights_only=True)) >= {"fc.0.weight", "layer4.2.conv3.weight"}
    loaded, info = load_model(tmp_path / "r.pth")
    assert isinstance(loaded, CheXResNet50) and info.architecture == "resnet50"
    images = np.load(tmp_path / "images.npy")[:2]
    heats, probabilities = cam.grad_cam_pp_batch(loaded, images, [0, 1], target_layer="auto", device=CPU)
    assert heats.shape == (2, 32, 32) and np.isfinite(heats).all() and (probabilities > 0).all()


def test_resnet50_imagenet_weights_fall_back_offline_naming_their_file(monkeypatch, caplog):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(initial, "get_model", offline)
    with caplog.at_level(logging.WARNING, logger="chexnet.model"):
        model, pretrained = build_model("imagenet", LABELS, "resnet50")
    assert isinstance(model, CheXResNet50) and not pretrained
    assert "resnet50-11ad3fa6.pth" in caplog.text


def test_an_architecture_that_disagrees_with_the_weights_file_is_refused(tmp_path: Path):
    save_model(tmp_path / "d.pth", build_network("densenet121", 3).state_dict(), ModelInfo(LABELS, 32))
    assert planned_architecture(str(tmp_path / "d.pth")) == "densenet121"
    with pytest.raises(ArchitectureError, match="is a densenet121 model"):
        build_model(str(tmp_path / "d.pth"), LABELS, "resnet50")
    with pytest.raises(ArchitectureError, match="vit_b_16"):
        planned_architecture("imagenet", "vit_b_16")


def test_chexnet_check_names_an_unknown_architecture(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("architecture: vgg19\n")
    problems = check(tmp_path / "params.yaml", tmp_path / "dvc.yaml")
    assert any(p.startswith("params: architecture:") and "densenet121, resnet50" in p for p in problems)


def _prepared(folder: Path, resize: str = "square") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps({"labels": list(LABELS.names), "resize": resize}))
    return folder


def test_evaluate_only_narrows_a_wider_model_by_name(tmp_path: Path):
    wide = LabelList(("Massa", "Edema", "Derrame", "Nódulo"), "from_data")
    torch.manual_seed(0)
    source = build_network("densenet121", 4)
    save_model(tmp_path / "w.pth", source.state_dict(), ModelInfo(wide, 32))
    state, info, summary = given.model_as_given(
        str(tmp_path / "w.pth"), LABELS, 32, _prepared(tmp_path / "p")
    )
    for row, name in enumerate(LABELS.names):
        assert torch.equal(state["classifier.0.weight"][row], source.head.weight[wide.index(name)])
    assert info.labels == LABELS and info.origin["kind"] == "evaluate-only"
    assert summary["outputs_left_out"] == ["Edema"] and summary["epochs_trained"] == 0
    assert len(info.origin["sha256"]) == 64


def test_evaluate_only_refuses_what_would_make_its_judgement_wrong(tmp_path: Path):
    narrow = LabelList(("Derrame", "Nódulo"), "from_data")
    save_model(tmp_path / "n.pth", build_network("densenet121", 2).state_dict(), ModelInfo(narrow, 32))
    with pytest.raises(LabelMismatchError, match=r"no output for \['Massa'\].*data.aliases"):
        given.model_as_given(str(tmp_path / "n.pth"), LABELS, 32, _prepared(tmp_path / "p"))
    save_model(tmp_path / "m.pth", build_network("densenet121", 3).state_dict(), ModelInfo(LABELS, 224))
    with pytest.raises(ChexnetError, match="set image_size: 224"):
        given.model_as_given(str(tmp_path / "m.pth"), LABELS, 32, _prepared(tmp_path / "p"))
    with pytest.raises(ChexnetError, match=r"set data\.resize: square"):
        given.model_as_given(str(tmp_path / "m.pth"), LABELS, 224, _prepared(tmp_path / "q", "center_crop"))
    with pytest.raises(ChexnetError, match="give a model file"):
        given.model_as_given("imagenet", LABELS, 224, _prepared(tmp_path / "p"))
