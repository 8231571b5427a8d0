"""Every stage script answers ``--help`` naming its ``--params`` option, run as DVC runs it
(``python stages/<name>.py``) but in this process (``tests.helpers.run_stage``); ``dvc repro`` in
tests/system/test_pipeline.py runs every script as a real process."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import REPO, run_stage

STAGES = sorted(path.stem for path in (REPO / "stages").glob("*.py") if not path.stem.startswith("_"))


def test_the_pipelines_stages_are_all_here() -> None:
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert set(declared) <= set(STAGES), set(declared) - set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_answers_help_naming_its_params_option(stage: str) -> None:
    result = run_stage(stage, "--help", cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout and "--params" in result.stdout
