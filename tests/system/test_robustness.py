"""What only a real stage process shows: a kill at a random moment, then a rerun, writes what an
uninterrupted run writes (never a half file at a real name); and a hostile input's one line comes out
of a real interpreter as it does in process.

Every other hostile input (bad tables, images, params; params that name nothing) runs in process in
tests/stage/test_hostile_inputs.py; SIGTERM and Ctrl-C under ``dvc repro`` are in test_lifecycle.py.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, process_env
from tests.stage.test_hostile_inputs import TABLE_CASES, evaluable, one_clean_line, prepare_work

PREPARE = str(REPO / "stages" / "prepare.py")


def _stage(work: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script], cwd=work, env=process_env(), capture_output=True, text=True, timeout=600
    )


def _kill_at_random(work: Path, script: str, low: float, high: float) -> None:
    """Start the stage, SIGKILL it anywhere from its imports to its last write, and wait."""
    process = subprocess.Popen([sys.executable, script], cwd=work, env=process_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(random.Random(os.getpid()).uniform(low, high))
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_bad_table_gives_the_same_one_line_from_a_real_stage_process(tmp_path: Path):
    name, make, needle = TABLE_CASES["csv-wrong-column"]
    work, table = prepare_work(tmp_path, table=name)
    make(table, work / name)
    one_clean_line(_stage(work, PREPARE), needle)
    assert not (work / "metrics" / "prepare.json").exists()


def test_prepare_killed_at_a_random_moment_then_rerun_gives_the_same_cache(tmp_path: Path):
    reference, table = prepare_work(tmp_path / "reference", n=120)
    table.to_parquet(reference / "table.parquet")
    assert _stage(reference, PREPARE).returncode == 0
    work, _ = prepare_work(tmp_path / "killed", n=120)
    table.to_parquet(work / "table.parquet")
    _kill_at_random(work, PREPARE, 0.5, 2.5)
    assert _stage(work, PREPARE).returncode == 0
    for name in ("images.npy", "index.parquet", "labels.json"):
        assert (work / "data/prepared" / name).read_bytes() == (
            reference / "data/prepared" / name
        ).read_bytes()


def _stage_outputs(work: Path, stage: str) -> dict[str, bytes]:
    outputs = {
        "split": ["data/split.parquet", "metrics/split.json", "reports/split.json"],
        "evaluate": ["metrics/evaluate.json", "reports/evaluate.json", "models/thresholds.json",
                     "plots/roc.csv", "data/predictions/test.parquet"],
        "explain": ["reports/explain.csv", "reports/explain.json", "metrics/explain.json"],
    }[stage]  # fmt: skip
    return {name: (work / name).read_bytes() for name in outputs}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """A work dir as train leaves it, with split and evaluate run (in process) and explain run as a real
    process: the outputs an uninterrupted run writes, for every stage killed below."""
    work = evaluable(tmp_path_factory.mktemp("uninterrupted"))
    result = _stage(work, str(REPO / "stages" / "explain.py"))
    assert result.returncode == 0, result.stderr[-2000:]
    return work


@pytest.mark.parametrize("stage", ["split", "evaluate", "explain"])
def test_a_stage_killed_at_a_random_moment_then_rerun_writes_what_an_uninterrupted_run_writes(
    uninterrupted: Path, tmp_path: Path, stage: str
):
    script = str(REPO / "stages" / f"{stage}.py")
    expected = _stage_outputs(uninterrupted, stage)
    work = tmp_path / "killed"
    shutil.copytree(uninterrupted, work)  # the stage's own outputs are there: it rewrites them all
    _kill_at_random(work, script, 0.5, 4.0)
    assert not [p for p in work.rglob("*.tmp") if not p.name.startswith(".")]  # never a half file at a name
    assert _stage(work, script).returncode == 0
    assert _stage_outputs(work, stage) == expected


def test_the_demo_stage_killed_at_a_random_moment_then_rerun_writes_the_same_set(tmp_path: Path):
    params = "demo: {n_patients: 30, n_images: 60, image_size: 64}\n"
    outputs = {}
    for name, kill in (("reference", False), ("killed", True)):
        work = tmp_path / name
        work.mkdir()
        (work / "params.yaml").write_text(params)
        script = str(REPO / "stages" / "demo.py")
        if kill:
            _kill_at_random(work, script, 0.5, 2.0)
        assert _stage(work, script).returncode == 0
        demo = work / "data" / "demo"
        files = [p for p in sorted(demo.rglob("*")) if p.is_file()]
        # a kill can leave only hidden temporary files (.<name>.*.tmp), never a half file at a real name
        assert all(p.name.endswith(".tmp") for p in files if p.name.startswith("."))
        outputs[name] = {
            str(p.relative_to(demo)): p.read_bytes() for p in files if not p.name.startswith(".")
        }
    assert outputs["killed"] == outputs["reference"]
