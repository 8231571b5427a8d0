"""chexnet explain in its own process (the unit tests: tests/unit/explain/test_explain.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from chexnet.model.network import CheXNet


def test_explain_cli_on_image_files(tmp_path: Path):
    torch.manual_seed(0)
    torch.save(CheXNet().state_dict(), tmp_path / "model.pth")
    gray16 = (np.random.default_rng(0).random((300, 300)) * 4095).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "scan16.png")
    rgba = np.random.default_rng(1).integers(0, 256, (200, 200, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "scan_rgba.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    command = [
        sys.executable,
        "-m",
        "chexnet",
        "explain",
        str(tmp_path / "scan16.png"),
        str(tmp_path / "broken.png"),
        str(tmp_path / "scan_rgba.png"),
        "--model",
        str(tmp_path / "model.pth"),
        "--finding",
        "Mass",
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1  # one file failed, and the exit status says so
    assert "broken.png: cannot be explained" in result.stderr
    assert (tmp_path / "out" / "scan16_Mass.png").exists() and (
        tmp_path / "out" / "scan_rgba_Mass.png"
    ).exists()
    assert result.stdout.count("\tMass\t") == 2
