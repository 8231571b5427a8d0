"""Real chexnet and stage processes for the reliability cases (in-process: tests/stage/test_cli_files.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO
from tests.stage.test_cli_files import CLI_NAMES_NOTHING, _cli


def _cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chexnet", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)  # fmt: skip


@pytest.mark.parametrize(("command", "options"), [CLI_NAMES_NOTHING[0], CLI_NAMES_NOTHING[8]], ids=str)
def test_the_same_one_line_from_a_real_chexnet_process(tmp_path: Path, other_model: Path, command, options):
    """What the in-process runs above check, once in a real ``python -m chexnet`` process: exit status
    1, one ERROR line, no traceback, and the same line as in-process."""
    inputs = ["x.png", "--model", str(other_model)]
    result = _cli_process(command, *inputs, *options, cwd=tmp_path)
    errors = [line.split(" ERROR ", 1)[1] for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    in_process = _cli(command, *inputs, *options, cwd=tmp_path)
    assert errors == [
        line.split(" ERROR ", 1)[1] for line in in_process.stderr.splitlines() if " ERROR " in line
    ]


def test_training_at_32_px_with_a_last_batch_of_one_runs(tmp_path: Path):
    from tests.helpers import make_workdir

    work = make_workdir(tmp_path, epochs=1, n=48)
    split = pd.read_parquet(work / "data" / "split.parquet")
    while (split["split"] == "train").sum() % 8 != 1:  # a last batch of one training image
        split.loc[split.index[split["split"] == "train"][0], "split"] = "val"
    split.to_parquet(work / "data" / "split.parquet", index=False)
    stage = [sys.executable, str(REPO / "stages" / "train.py")]
    result = subprocess.run(stage, cwd=work, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "last batch of one image" in result.stderr
