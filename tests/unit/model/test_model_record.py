"""The model record (``<model>.json``, chexnet-model/2): what a model needs to be used right travels
with it, is checked on read, and every reader runs the model in the precision it was trained in."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chexnet.config.stage import stage_params_from_dict
from chexnet.config.train import TrainParams
from chexnet.core.labels import LabelList
from chexnet.engine import inference, records
from chexnet.engine.inference import FP32, Precision
from chexnet.model.file import InputSpec, ModelInfo, RunAs, load_model, save_model
from chexnet.model.network import CheckpointError, CheXNet
from tests.helpers import TEST_MODEL_SIZE, run_cli, save_test_model

LABELS = LabelList(("Derrame", "Nódulo", "Massa"), "from_data")
CPU = torch.device("cpu")


def _saved(tmp_path: Path, info: ModelInfo, seed: int = 0) -> tuple[Path, CheXNet]:
    torch.manual_seed(seed)
    model = CheXNet(len(info.labels))
    save_model(tmp_path / "m.pth", model.state_dict(), info)
    return tmp_path / "m.pth", model


def _record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "m.json").read_text())


def test_the_record_says_everything_needed_and_reads_back(tmp_path: Path):
    origin = {"kind": "trained", "initial_weights": "none"}
    info = ModelInfo(
        LABELS, 64, run_as=RunAs("bfloat16", "channels_last"), origin=origin, training={"epochs": 3}
    )
    path, _ = _saved(tmp_path, info)
    record = _record(tmp_path)
    assert record["format"] == "chexnet-model/2" and record["architecture"] == "densenet121"
    assert record["outputs"] == 3 and record["labels"] == list(LABELS.names)
    assert record["input"] == {"channels": 3, "scale": 255.0, "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225], "resize": "square"}  # fmt: skip
    assert record["run_as"] == {"dtype": "bfloat16", "memory_format": "channels_last"}
    _, read = load_model(path)
    assert read == info


def test_a_version_1_record_is_read_with_what_chexnet_wrote_then(tmp_path: Path, caplog):
    path, _ = _saved(tmp_path, ModelInfo(LABELS, 64))
    (tmp_path / "m.json").write_text(json.dumps({"format": "chexnet-model/1", "labels": list(LABELS.names),
                                                 "label_source": "from_data", "image_size": 64}))  # fmt: skip
    _, info = load_model(path)
    assert info.architecture == "densenet121" and info.run_as is None
    assert info.input == InputSpec(size=64)  # the record's image size travels in its input rule
    with caplog.at_level(logging.INFO, logger="chexnet.engine.inference"):
        assert Precision.recorded(info.run_as, CPU) == FP32
    assert "does not record the precision" in caplog.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "chexnet-model/9"}, r"format 'chexnet-model/9' is not one this chexnet reads"),
        ({"architecture": "vit_b_16"}, r"architecture 'vit_b_16'"),
        ({"input": {"channels": 1, "scale": 1.0, "mean": [0.0], "std": [1.0], "resize": "letterbox"}},
         r"resize 'letterbox'.*wrong probabilities"),
        ({"input": {"channels": 2, "scale": 1.0, "mean": [0.0], "std": [1.0], "resize": "square"}},
         r"channels 2 \(1 or 3\).*1 means"),
        ({"run_as": {"dtype": "bfloat16"}}, r"not a complete chexnet-model/2 record"),
    ],
)  # fmt: skip
def test_a_record_this_chexnet_cannot_honour_is_refused_naming_why(tmp_path: Path, change, message):
    path, _ = _saved(tmp_path, ModelInfo(LABELS, 64))
    (tmp_path / "m.json").write_text(json.dumps(_record(tmp_path) | change))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_train_records_the_precision_it_trained_in(tmp_path: Path):
    params = stage_params_from_dict({"weights": "inputs/none", "train": {"amp": "off"}}, (TrainParams,))
    info = records.model_record(params, LABELS, 64, pretrained=False, device=CPU)
    assert info.run_as == Precision.of("off", "auto", CPU).run_as() == RunAs("float32", "channels_last")
    assert info.origin == {"kind": "trained", "initial_weights": "none", "pretrained": False}
    assert info.training["train"]["amp"] == "off" and info.training["epochs"] == 5
    path, _ = _saved(tmp_path, info)
    assert load_model(path)[1] == info


def test_a_precision_the_machine_lacks_falls_back_to_fp32_in_one_line(monkeypatch, caplog):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="chexnet.engine.inference"):
        assert Precision.recorded(RunAs("bfloat16", "channels_last"), CPU) == Precision(None, True)
        assert Precision.recorded(RunAs("float16", "contiguous"), CPU) == FP32
    assert len(caplog.records) == 2 and "trained in bfloat16" in caplog.records[0].getMessage()
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert Precision.recorded(RunAs("bfloat16", "channels_last"), CPU) == Precision(torch.bfloat16, True)
    assert Precision.recorded(RunAs("float32", "contiguous"), CPU) == FP32


@pytest.mark.skipif(not inference.cpu_has_native_bf16(), reason="needs a CPU with native bf16")
def test_predict_runs_the_model_in_its_recorded_precision(tmp_path: Path):
    """The CLI's probabilities are those of the recorded bf16 path, not of fp32 (the thresholds beside
    the model were chosen on bf16 outputs)."""

    path, model = _saved(tmp_path, ModelInfo(LABELS, 64, run_as=RunAs("bfloat16", "channels_last")), seed=3)
    thresholds = {"labels": list(LABELS.names), "thresholds": dict.fromkeys(LABELS.names, 0.5)}
    (tmp_path / "thresholds.json").write_text(json.dumps(thresholds))
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    result = run_cli("predict", str(tmp_path / "x.png"), "--model", str(path), "--json", "--engine", "torch")
    assert result.returncode == 0, result.stderr
    got = np.array(list(json.loads(result.stdout)["results"][0]["probabilities"].values()))
    model = model.to(memory_format=torch.channels_last)
    bf16 = inference.predict_images(model, pixels[None], CPU, Precision(torch.bfloat16, True))[0]
    fp32 = inference.predict_images(model, pixels[None], CPU, FP32)[0]
    np.testing.assert_allclose(got, bf16, atol=1e-6)
    assert np.abs(bf16 - fp32).max() > 1e-5  # the two paths differ: the test can tell them apart
    # --engine auto runs ONNX Runtime (fp32) and reruns in bf16 every image with a probability within 0.02
    # of its threshold: its decisions are the bf16 path's, its probabilities within bf16's rounding
    auto = run_cli("predict", str(tmp_path / "x.png"), "--model", str(path), "--json")
    assert auto.returncode == 0, auto.stderr
    image = json.loads(auto.stdout)["results"][0]
    assert image["positives"] == [name for name, p in zip(LABELS.names, bf16, strict=True) if p >= 0.5]
    served = np.array(list(image["probabilities"].values()))
    near = (np.abs(fp32 - 0.5) < 0.02).any()
    np.testing.assert_allclose(served, bf16 if near else fp32, atol=1e-5)


def test_a_failed_save_leaves_neither_the_model_nor_its_record(tmp_path: Path, monkeypatch):
    from chexnet.model import file

    path = tmp_path / "models" / "m.pth"
    save_test_model(path, image_size=TEST_MODEL_SIZE)
    before = (path.read_bytes(), file.model_info_path(path).read_text())
    info = load_model(path)[1]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for broken in (file.torch, file.io):  # the weights' write, then the record's
        with monkeypatch.context() as patch:
            patch.setattr(broken, "save" if broken is file.torch else "write_json", full_disk)
            with pytest.raises(OSError):
                file.save_model(path, torch.nn.Linear(1, 1).state_dict(), info.__class__(info.labels, 64))
    assert (path.read_bytes(), file.model_info_path(path).read_text()) == before  # the old pair, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.pth"]  # no temporary left
