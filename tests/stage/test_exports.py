"""Exports and engine caches, checked against the model file's sha256 on every use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from chexnet.core import io
from chexnet.model.file import load_model
from tests.helpers import TEST_MODEL_SIZE, png_file, run_cli, save_test_model


def test_an_export_of_the_model_before_a_retrain_is_refused(model_path: Path, tmp_path: Path):
    from chexnet.deploy.export import export_onnx

    old = tmp_path / "old.pth"
    save_test_model(old, image_size=TEST_MODEL_SIZE, seed=1)
    export_onnx(old, tmp_path / "old.onnx")  # the same finding names, the other weights
    image = str(png_file(tmp_path / "x.png"))
    result = run_cli(
        "predict", image, "--model", str(model_path), "--engine", "onnx", "--onnx", str(tmp_path / "old.onnx")
    )
    assert result.returncode == 1 and "not this model's export" in result.stderr
    export_onnx(model_path, tmp_path / "m.onnx")
    good = run_cli(
        "predict",
        image,
        "--model",
        str(model_path),
        "--engine",
        "onnx",
        "--onnx",
        str(tmp_path / "m.onnx"),
        "--json",
    )
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize("kind", ["missing", "damaged", "png", "other size", "folder"])
def test_a_bad_onnx_file_is_one_line_naming_it(model_path: Path, tmp_path: Path, kind: str):
    from chexnet.deploy.export import export_onnx

    target = tmp_path / "given.onnx"
    if kind == "damaged":
        export_onnx(model_path, target)
        target.write_bytes(target.read_bytes()[:50_000])
    elif kind == "png":
        png_file(target)
    elif kind == "other size":
        # the same weights file (same sha256) whose record says 48 px: only the size differs
        bigger = tmp_path / "big" / "m.pth"
        bigger.parent.mkdir()
        bigger.write_bytes(model_path.read_bytes())
        record = json.loads(model_path.with_suffix(".json").read_text())
        bigger.with_suffix(".json").write_text(json.dumps({**record, "image_size": 48}))
        export_onnx(bigger, target)
    elif kind == "folder":
        target.mkdir()
    result = run_cli(
        "predict",
        str(png_file(tmp_path / "x.png")),
        "--model",
        str(model_path),
        "--engine",
        "onnx",
        "--onnx",
        str(target),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(target) in result.stderr and "chexnet export" in result.stderr
    if kind == "other size":
        assert "takes [1, 48, 48] pixels, the model 32 × 32" in result.stderr
    assert len([line for line in result.stderr.splitlines() if "ERROR" in line]) == 1, result.stderr


def test_a_damaged_cached_export_is_exported_again(model_path: Path, tmp_path: Path, monkeypatch):
    from chexnet.deploy import engines

    monkeypatch.setattr(engines, "CACHE_DIR", tmp_path / "cache")
    info = load_model(model_path)[1]
    digest = io.sha256_of(model_path)
    first = engines.cached_onnx_engine(model_path, info, torch.device("cpu"), digest)
    first.path.write_bytes(b"not onnx at all")
    again = engines.cached_onnx_engine(model_path, info, torch.device("cpu"), digest)
    assert again.path == first.path and again.path.stat().st_size > 1000


@pytest.mark.parametrize("cache", ["a file", "read-only"])
def test_an_unusable_cache_falls_back_to_torch_under_auto_and_is_named_under_onnx(
    model_path: Path, tmp_path: Path, monkeypatch, cache: str
):
    from chexnet.deploy import engines

    where = tmp_path / "cache"
    if cache == "a file":
        where.write_text("not a folder")
    else:
        where.mkdir()
        where.chmod(0o500)
        if os.access(where, os.W_OK):  # root writes anywhere: the case cannot be made here
            pytest.skip("this user can write a read-only folder (root)")
    monkeypatch.setattr(engines, "CACHE_DIR", where / "onnx" if cache == "read-only" else where)
    image = str(png_file(tmp_path / "x.png"))
    auto = run_cli("predict", image, "--model", str(model_path), "--engine", "auto", "--json")
    assert auto.returncode == 0 and "running in PyTorch" in auto.stderr
    assert json.loads(auto.stdout)["results"][0]["ok"]
    onnx = run_cli("predict", image, "--model", str(model_path), "--engine", "onnx")
    assert onnx.returncode == 1 and "CHEXNET_CACHE" in onnx.stderr and "Traceback" not in onnx.stderr
