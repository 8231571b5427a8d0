"""Every benchmark script still imports and answers ``--help``.

The benchmarks are run by hand (their figures go to benchmarks/results/), so nothing else notices when
a move in src/ or tests/ breaks one: serve_load's import of the serve test helpers did exactly that when
the system tier moved them. Running ``main()`` with ``--help`` in this process imports every module the
script needs and builds its parser without measuring anything.
"""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.helpers import REPO

SCRIPTS = sorted(
    path.stem for path in (REPO / "benchmarks").glob("*.py") if path.stem not in {"__init__", "common"}
)


def test_the_benchmark_list_is_not_empty() -> None:
    assert "serve_load" in SCRIPTS and "train_speed" in SCRIPTS, SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_imports_and_answers_help(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as stopped:
        module.main()
    assert stopped.value.code == 0
    assert "usage:" in capsys.readouterr().out
