"""scripts/stage_deps.py run as a user runs it (the dependency checks: tests/repository/test_dvc_deps.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chexnet.pipeline import stage_deps
from tests.helpers import REPO


def test_the_script_writes_exactly_the_lists_the_test_checks(tmp_path: Path):
    """``scripts/stage_deps.py`` leaves the committed dvc.yaml as it is (its lists are the closure), and
    puts back a code dep removed by hand, keeping the comments and the data deps."""
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert stage_deps.with_code_deps(text, REPO) == text
    damaged = text.replace("      - src/chexnet/engine/opened.py\n", "", 1)
    assert damaged != text
    (tmp_path / "stages").symlink_to(REPO / "stages")
    (tmp_path / "src").symlink_to(REPO / "src")
    (tmp_path / "dvc.yaml").write_text(damaged, encoding="utf-8")
    script = [
        sys.executable,
        str(REPO / "scripts" / "stage_deps.py"),
        "--dvc-yaml",
        str(tmp_path / "dvc.yaml"),
    ]
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 1
    assert subprocess.run(script, capture_output=True).returncode == 0
    assert (tmp_path / "dvc.yaml").read_text(encoding="utf-8") == text
