"""`chexnet compare` in process on two predictions files: JSON and the table people read."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import predictions_frame, run_cli


def test_the_command_compares_two_prediction_files(tmp_path: Path):
    predictions_frame(1).to_parquet(tmp_path / "a.parquet")
    predictions_frame(1).to_parquet(tmp_path / "b.parquet")
    result = run_cli("compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--json",
                     "--resamples", "50", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["macro"]["difference"] == 0 and answer["findings"]["Nódulo"]["p"] == 1
    table = run_cli("compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"), "--resamples", "50")
    assert "B − A (paired CI)" in table.stdout and "Nódulo" in table.stdout
