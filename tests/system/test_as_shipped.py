"""The design card's and README's commands, verbatim, on a clone of the committed repository.

Every other pipeline test runs its own tiny params.yaml (written by PyYAML), so none of them would see
the committed file break under DVC's own rewrite; this one takes the repository as a user gets it.
``dvc exp run --dry`` cannot run on a fresh clone (DVC 3.67 hashes outputs no stage wrote yet), so the
experiments are queued, which applies ``-S`` to the queued copy of ``params.yaml`` exactly as a run
does, and then removed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from chexnet.config.params import params_from_dict
from chexnet.config.schema import read_yaml
from tests.helpers import REPO, process_env


def _run(cwd: Path, *args: str) -> str:
    result = subprocess.run(args, cwd=cwd, env=process_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    root = tmp_path_factory.mktemp("chexnet-clone") / "chexnet"
    _run(REPO.parent, "git", "clone", "--quiet", str(REPO), str(root))
    return root


def _queued_params(clone: Path) -> list[dict]:
    """The params.yaml of every queued experiment, read from the stash commits DVC queued them in."""
    refs = _run(clone, "git", "rev-list", "--walk-reflogs", "refs/exps/celery/stash").split()
    return [read_yaml(_run(clone, "git", "show", f"{ref}:params.yaml"), Path("params.yaml")) for ref in refs]


def test_the_cards_set_param_command_and_the_readmes_sweep_queue_on_a_fresh_clone(clone: Path):
    committed = read_yaml((clone / "params.yaml").read_text(encoding="utf-8"), Path("params.yaml"))
    try:
        _run(clone, "dvc", "exp", "run", "--queue", "-S", "epochs=10")
        _run(clone, "dvc", "exp", "run", "--queue", "-S", "lr=0.0001,0.0003", "-S", "batch_size=16,32")
        queued = _queued_params(clone)
    finally:
        subprocess.run(["dvc", "queue", "remove", "--all"], cwd=clone, env=process_env(), capture_output=True)
    assert len(queued) == 5
    sweep = [{"lr": lr, "batch_size": size} for lr in (0.0001, 0.0003) for size in (16, 32)]
    expected = [{**committed, "epochs": 10}] + [{**committed, **point} for point in sweep]
    key = repr
    assert sorted(queued, key=key) == sorted(expected, key=key)  # only the -S values differ
    for params in queued:
        params_from_dict(params)  # each queued copy is one the stages accept


def test_chexnet_check_passes_on_the_committed_params(clone: Path):
    assert "params.yaml: OK" in _run(clone, "chexnet", "check")


def test_the_readmes_metrics_and_plots_commands_read_the_committed_run_on_a_fresh_clone(clone: Path):
    """``dvc metrics show``, ``dvc metrics diff`` and ``dvc plots show`` as the README has them, before any
    ``dvc repro``: the headline figures and curves are in git (``cache: false``), so a fresh clone shows
    the committed run, and the workspace differs from its commit in nothing."""
    shown = _run(clone, "dvc", "metrics", "show", "--json")
    committed_auroc = json.loads((clone / "metrics/evaluate.json").read_text())["auroc"]["macro"]["value"]
    assert "metrics/evaluate.json" in shown and str(committed_auroc) in shown
    assert _run(clone, "dvc", "metrics", "diff").strip() == ""  # nothing changed since the commit
    _run(clone, "dvc", "plots", "show")
    html = (clone / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    for chart in ("loss", "val_auroc", "roc", "pr", "calibration"):  # the curves the commit holds
        assert f"vegaEmbed('#{chart}'" in html, chart
    assert "cdn.jsdelivr" not in html  # the offline template (.dvc/html), as in test_pipeline.py
