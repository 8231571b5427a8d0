"""chexnet predict with an ONNX export, in its own process (the unit tests:
tests/unit/deploy/test_export.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import LABELS
from tests.unit.deploy.test_export import _model, _radiographs


def test_predict_with_onnx_gives_torch_fp32_s_findings(tmp_path: Path):
    path = _model(tmp_path, "densenet121")
    from PIL import Image

    for i, image in enumerate(_radiographs(3)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    outputs = {}
    for engine in ("torch", "onnx"):
        command = [sys.executable, "-m", "chexnet", "predict", str(tmp_path), "--model", str(path), "--json",
                   "--engine", engine]  # fmt: skip
        env = {"CHEXNET_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[engine] = json.loads(result.stdout)["results"]
    for torch_row, onnx_row in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert torch_row["positives"] == onnx_row["positives"]
        for label in LABELS:
            assert abs(torch_row["probabilities"][label] - onnx_row["probabilities"][label]) < 1e-5
