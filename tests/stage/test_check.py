"""`chexnet check`, in process: what DVC would only call an unexpected error is named in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli


def test_chexnet_check_names_the_empty_path_dvc_would_fail_on(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("data:\n  bbox_table: ''\n")
    result = _cli("check", cwd=tmp_path)
    assert result.returncode == 1 and "data.bbox_table is empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_chexnet_check_passes_the_repos_params_and_refuses_a_bad_layer_and_a_missing_file(tmp_path: Path):
    ok = _cli("check", cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "params.yaml").write_text("explain:\n  target_layer: classifier\n")
    layer = _cli("check", cwd=tmp_path)
    assert layer.returncode == 1 and "target layer 'classifier'" in layer.stderr
    (tmp_path / "params.yaml").write_text("data: {table: own.csv, images: own}\n")  # the demo box table stays
    own = _cli("check", cwd=tmp_path)
    assert own.returncode == 1 and "data.bbox_table" in own.stderr and "your own data" in own.stderr
    (tmp_path / "params.yaml").write_text("split:\n  method: official\n  test_list: lists/test.txt\n")
    missing = _cli("check", cwd=tmp_path)
    assert (
        missing.returncode == 1 and "split.test_list" in missing.stderr and "lists/test.txt" in missing.stderr
    )


# --- the CLI: thresholds that belong to the model, JSON files, folders -------------------------------
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)  # in this process: the fast loop (tests/conftest.py)


@pytest.mark.parametrize(
    "bad",
    [
        "data: {preset: padchestt, bbox_table: inputs/none}",
        "{demo: {layout: nih14}, data: {bbox_table: inputs/none}}",
    ],
)
def test_chexnet_check_refuses_a_preset_or_layout_that_names_nothing(tmp_path: Path, bad: str):
    (tmp_path / "params.yaml").write_text(bad)
    result = _cli("check", "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and len(errors) == 1 and "must be one of: seed" in errors[0], result.stderr
