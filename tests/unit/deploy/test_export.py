"""`chexnet export` and the engine choice: ONNX Runtime's probabilities equal PyTorch's within 1e-5 for
every backbone and input rule, the record travels inside the file, and `--engine` picks as measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from chexnet.core.io import sha256_of
from chexnet.data.input_spec import IMAGENET_INPUT, XRV_INPUT
from chexnet.deploy import engines
from chexnet.deploy.export import OPSET, export_onnx, sidecar
from chexnet.engine import inference
from chexnet.model.file import ModelInfo, RunAs, load_model, save_model
from chexnet.model.network import build_network
from chexnet.synthetic.painter import Anatomy, draw_radiograph
from tests.helpers import LABELS

pytest.importorskip("onnxruntime")
SIZE = 64


def _radiographs(count: int = 4) -> np.ndarray:
    """Film-like images (the demo's painter), with findings: what a model is really fed."""
    rng = np.random.default_rng(3)
    images = []
    for i in range(count):
        field, _ = draw_radiograph(
            SIZE, Anatomy.sample(rng), {"Effusion", "Mass"} if i % 2 else set(), rng, 2.0
        )
        images.append(np.round(np.clip(field, 0, 1) * 255).astype(np.uint8))
    return np.stack(images)


def _model(tmp: Path, architecture: str, spec=None) -> Path:
    torch.manual_seed(0)
    network = (
        build_network(architecture, len(LABELS), spec) if spec else build_network(architecture, len(LABELS))
    )
    path = tmp / f"{architecture}.pth"
    info = ModelInfo(engines_labels(), SIZE, architecture=architecture, input=spec or IMAGENET_INPUT,
                     run_as=RunAs("float32", "contiguous"))  # fmt: skip
    save_model(path, network.state_dict(), info)
    return path


def engines_labels():
    from chexnet.core.labels import LabelList

    return LabelList(LABELS, "nih14")


@pytest.mark.parametrize(("architecture", "spec"), [("densenet121", None), ("resnet50", None),
                                                    ("densenet121", XRV_INPUT)])  # fmt: skip
def test_onnx_runtime_equals_pytorch_within_1e_5_for_every_backbone(tmp_path: Path, architecture: str, spec):
    path = _model(tmp_path, architecture, spec)
    document = export_onnx(path, tmp_path / "m.onnx")
    model, info = load_model(path)
    images = _radiographs()
    reference = inference.predict_images(model.eval(), images, torch.device("cpu"))
    onnx_engine = engines.OnnxEngine(
        tmp_path / "m.onnx", info, torch.device("cpu"), model_sha256=sha256_of(path)
    )
    for batch in (images[:1], images):  # the batch size is dynamic
        got = onnx_engine.probabilities(batch)
        np.testing.assert_allclose(got, reference[: len(batch)], atol=1e-5)
    assert document["opset"] == OPSET and document["input"]["shape"] == ["batch", 1, SIZE, SIZE]
    assert json.loads(sidecar(tmp_path / "m.onnx").read_text())["record"]["architecture"] == architecture


def test_the_record_and_thresholds_travel_inside_the_onnx_file(tmp_path: Path):
    path = _model(tmp_path, "densenet121")
    thresholds = {"labels": list(LABELS), "method": "youden", "chosen_on": "val",
                  "thresholds": dict.fromkeys(LABELS, 0.3), "fallbacks": {}}  # fmt: skip
    (tmp_path / "thresholds.json").write_text(json.dumps(thresholds))
    export_onnx(path, tmp_path / "m.onnx")
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert (
        metadata["chexnet_record"]["labels"] == list(LABELS)
        and metadata["chexnet_record"]["image_size"] == SIZE
    )
    assert metadata["chexnet_thresholds"]["thresholds"]["Mass"] == 0.3
    assert metadata["chexnet_export"]["output"]["findings"] == list(LABELS)


def test_an_export_of_another_model_is_refused(tmp_path: Path):
    path = _model(tmp_path, "densenet121")
    export_onnx(path, tmp_path / "m.onnx")
    from chexnet.core.labels import LabelList

    other = ModelInfo(LabelList(tuple(reversed(LABELS)), "explicit"), SIZE)
    with pytest.raises(Exception, match="not this model's export"):
        engines.OnnxEngine(tmp_path / "m.onnx", other, torch.device("cpu"), model_sha256=sha256_of(path))


def test_auto_follows_the_measured_rule():
    from chexnet.core.labels import LabelList

    bf16 = ModelInfo(LabelList(LABELS, "nih14"), 224, run_as=RunAs("bfloat16", "channels_last"))
    fp32 = ModelInfo(LabelList(LABELS, "nih14"), 224, run_as=RunAs("float32", "contiguous"))
    assert engines.auto_choice(torch.device("cuda"), 1, bf16) == "torch"
    assert engines.auto_choice(torch.device("cpu"), 1, bf16) == "onnx"  # a service's one image at a time
    assert engines.auto_choice(torch.device("cpu"), 16, fp32) == "onnx"
    expected = "time both" if engines.native_bf16() else "onnx"
    assert engines.auto_choice(torch.device("cpu"), 16, bf16) == expected


def test_timed_choice_keeps_the_faster_and_remembers_it(tmp_path: Path, monkeypatch):
    from chexnet.core.labels import LabelList

    monkeypatch.setattr(engines, "CACHE_DIR", tmp_path)
    info = ModelInfo(LabelList(LABELS, "nih14"), 8)

    class Slow:
        def probabilities(self, pixels):
            import time

            time.sleep(0.02)
            return np.zeros((len(pixels), len(LABELS)))

    class Fast:
        def probabilities(self, pixels):
            return np.zeros((len(pixels), len(LABELS)))

    assert engines.timed_choice({"torch": Slow(), "onnx": Fast()}, info, 16) == "onnx"
    assert engines.timed_choice({"torch": Fast(), "onnx": Slow()}, info, 16) == "onnx"  # remembered
    assert list(json.loads((tmp_path / "engine_choices.json").read_text()).values()) == ["onnx"]


def test_decisions_near_a_threshold_are_rechecked_in_the_recorded_precision():
    """ThresholdConsistent: an image with any probability within the margin of its threshold takes the
    exact engine's answer; the others keep the fast engine's."""

    class Fixed:
        def __init__(self, values):
            self.values, self.name = np.asarray(values, dtype=float), "fixed"

        def probabilities(self, pixels):
            return self.values[: len(pixels)]

    fast = Fixed([[0.495, 0.9], [0.2, 0.1], [0.7, 0.515]])  # images 0 and 2 are near a 0.5 threshold
    exact = Fixed([[0.505, 0.9], [0.6, 0.1]])  # what the recorded precision says for those two
    engine = engines.ThresholdConsistent(fast, exact, np.array([0.5, 0.5]), margin=0.02)
    got = engine.probabilities(np.zeros((3, 4, 4), np.uint8))
    np.testing.assert_array_equal(got, [[0.505, 0.9], [0.2, 0.1], [0.6, 0.1]])
    assert (engine.images, engine.rechecked) == (3, 2)
