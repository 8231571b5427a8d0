"""The CLI's files, in process: thresholds that belong to the chosen model, damaged JSON records, folders
and options that name nothing, each refused in one line before any inference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli


# --- the CLI: thresholds that belong to the model, JSON files, folders -------------------------------
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)  # in this process: the fast loop (tests/conftest.py)


def test_predict_reads_the_chosen_models_own_thresholds(tmp_path: Path, other_model: Path):
    result = _cli("predict", "x.png", "--model", str(other_model), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["thresholds"]["source"] == str(other_model.parent / "thresholds.json")
    assert document["results"][0]["positives"] == ["Derrame"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            '{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 7.5, "Nódulo": 0.5}}',
            "not probabilities",
        ),
        (
            '{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": "x", "Nódulo": 0.5}}',
            "not probabilities",
        ),
        ('{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 0.5}}', "are for"),
        ('{"labels": ["Derrame", "Nódulo"], "thresh', "not valid JSON"),
    ],
)
def test_a_damaged_or_out_of_range_thresholds_file_is_refused(
    tmp_path: Path, other_model: Path, content, needle
):
    (other_model.parent / "thresholds.json").write_text(content)
    result = _cli("predict", "x.png", "--model", str(other_model), cwd=tmp_path)
    assert result.returncode == 1 and needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", ['{"labels": ["Derrame", ', '{"image_size": 32}', "[]"])
def test_a_damaged_model_record_is_refused_in_one_line(tmp_path: Path, other_model: Path, content: str):
    other_model.with_suffix(".json").write_text(content)
    result = _cli("predict", "x.png", "--model", str(other_model), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(other_model.with_suffix(".json")) in result.stderr


@pytest.mark.parametrize("command", ["predict-heatmaps", "explain"])
def test_a_bad_layer_or_read_only_folder_is_refused_before_any_inference(tmp_path, other_model, command):
    base = (
        ["predict", "x.png", "--heatmaps"] if command == "predict-heatmaps" else ["explain", "x.png", "--out"]
    )
    layer = _cli(*base, "maps", "--model", str(other_model), "--layer", "nope", cwd=tmp_path)
    assert layer.returncode == 1 and "target layer 'nope'" in layer.stderr and "Traceback" not in layer.stderr
    assert "x.png" not in layer.stderr  # the layer is blamed, not the image
    # a folder that cannot be made or written (here under a file: refused for root too)
    (tmp_path / "blocker").write_text("a file, not a folder")
    ro = _cli(*base, "blocker/maps", "--model", str(other_model), cwd=tmp_path)
    assert ro.returncode == 1 and "cannot be written" in ro.stderr and "Traceback" not in ro.stderr
    assert "blocker/maps" in ro.stderr


CLI_NAMES_NOTHING = [
    ("predict", ["--model", "nothing/model.pth"]),
    ("predict", ["--labels", "Nothing"]),
    ("predict", ["--device", "cuda:7"]),
    ("predict", ["--image-size", "48"]),  # the model says 32
    ("predict", ["--batch-size", "0"]),
    ("predict", ["--thresholds", "nothing.json"]),
    ("predict", ["--heatmaps", "maps", "--layer", "features[99]"]),
    ("explain", ["--finding", "Nothing"]),
    ("explain", ["--layer", "classifier"]),
    ("explain", ["--device", "mps"]),
    ("check", ["--params", "nothing.yaml"]),
]


@pytest.mark.parametrize(
    ("command", "options"), CLI_NAMES_NOTHING, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_every_cli_option_that_names_nothing_gives_one_line(
    tmp_path: Path, other_model: Path, command, options
):
    inputs = [] if command == "check" else ["x.png", "--model", str(other_model)]
    result = _cli(command, *inputs, *options, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]


def test_out_of_memory_in_a_stage_is_one_line(tmp_path: Path, monkeypatch):
    from chexnet.pipeline import stage_runner

    def body(_params):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(SystemExit) as stopped:
        stage_runner.run_stage("test", body, sections=())
    assert stopped.value.code == 1
