"""The train stage as DVC runs it: under torchrun with 2 CPU processes (gloo), and killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO, process_env
from tests.helpers import make_workdir as _workdir

STAGE = str(REPO / "stages" / "train.py")


def _run(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=process_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_torchrun_two_cpu_processes_with_gloo(tmp_path: Path):
    work = _workdir(tmp_path, epochs=2)
    _run(work, "torchrun", "--standalone", "--nproc_per_node=2", STAGE)
    metrics = json.loads((work / "metrics" / "train.json").read_text())
    report = json.loads((work / "reports" / "train.json").read_text())
    assert report["train_device"] == "cpu x2" and metrics["epochs_trained"] == 2
    assert "train_images_per_second" not in metrics  # timings vary run to run: a report, not a metric
    assert 0 <= metrics["best_val_mean_auroc"] <= 1
    assert set(_weights(work / "models" / "chexnet_model.pth")) >= {
        "classifier.0.weight",
        "features.norm5.weight",
    }
    summary = json.loads((work / "dvclive" / "metrics.json").read_text())
    assert summary["step"] == 1 and "loss" in summary["train"] and "mean_auroc" in summary["val"]
    assert not (work / "checkpoints" / "train_checkpoint.pt").exists()  # removed once finished


def _kill_after_first_checkpoint(work: Path) -> Path:
    """Run the stage in ``work`` and ``kill -9`` it as soon as its first resume checkpoint exists."""
    checkpoint = work / "checkpoints" / "train_checkpoint.pt"
    process = subprocess.Popen([sys.executable, STAGE], cwd=work, env=process_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), "the run ended before it wrote a checkpoint"
    return checkpoint


def test_killed_mid_epoch_then_rerun_resumes_and_matches_an_uninterrupted_run(
    tmp_path: Path, uninterrupted_train_run: Path
):
    epochs, reference = 4, uninterrupted_train_run  # the same tiny set and params, run to its end

    work = _workdir(tmp_path / "killed", epochs=epochs)
    checkpoint = _kill_after_first_checkpoint(work)  # kill -9, in the middle of epoch 2 (or later)
    killed_after = torch.load(checkpoint, weights_only=True)["epoch"]
    assert killed_after < epochs
    assert not (work / "models" / "chexnet_model.pth").exists()

    _run(work, sys.executable, STAGE)
    metrics = json.loads((work / "metrics" / "train.json").read_text())
    report = json.loads((work / "reports" / "train.json").read_text())
    assert report["resumed_from_epoch"] == killed_after + 1 and metrics["epochs_trained"] == epochs
    resumed, uninterrupted = (
        _weights(work / "models" / "chexnet_model.pth"),
        _weights(reference / "models" / "chexnet_model.pth"),
    )
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    reference_live = (reference / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").read_text()
    assert (work / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").read_text() == reference_live


def test_a_bad_param_gives_one_line_and_exit_1_from_a_real_train_process(tmp_path: Path):
    """The train stage's own interpreter (the one that would launch torchrun) refuses a misspelt key in one
    line; every other bad value is refused in process (tests/stage/test_hostile_inputs.py)."""
    work = _workdir(tmp_path, epochs=1)
    (work / "params.yaml").write_text("{train: {procesess: 2}}")
    result = subprocess.run(
        [sys.executable, STAGE], cwd=work, env=process_env(), capture_output=True, text=True
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr and "params:" in result.stderr


def test_torchrun_traceback_is_dropped_and_a_workers_own_traceback_kept():
    from chexnet.engine.distributed import without_launcher_traceback

    torchrun = [
        "2026 ERROR chexnet: split 'val' is empty: use more images\n",
        "Traceback (most recent call last):\n",
        '  File "torchrun", line 8, in <module>\n',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n",
        "============================================================\n",
        "stages/train.py FAILED\n",
        "============================================================\n",
        "after\n",
    ]
    assert list(without_launcher_traceback(torchrun)) == [torchrun[0], "after\n"]
    bug = ["Traceback (most recent call last):\n", '  File "x.py", line 1\n', "ZeroDivisionError: boom\n"]
    assert list(without_launcher_traceback(bug)) == bug


def test_two_processes_launched_by_the_stage_report_a_user_error_in_one_line(tmp_path: Path):
    work = _workdir(tmp_path, epochs=1)
    (work / "params.yaml").write_text("{weights: none, device: cpu, train: {processes: 2}}\n")
    (work / "data" / "split.parquet").unlink()  # every worker fails to read it
    result = subprocess.run(
        [sys.executable, STAGE], cwd=work, env=process_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "ChildFailedError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "failed in one of its 2 processes" in result.stderr


def _processes_in(folder: Path) -> list[int]:
    """PIDs whose working directory is ``folder`` (what a stage's processes run in)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder.resolve():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_process_group_leaves_no_worker_training(tmp_path: Path):
    work = _workdir(tmp_path, epochs=30)
    (work / "params.yaml").write_text(
        "{epochs: 30, batch_size: 8, weights: none, device: cpu, train: {processes: 2}}\n"
    )
    leader = subprocess.Popen([sys.executable, STAGE], cwd=work, env=process_env(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = work / "checkpoints" / "train_checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and leader.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists() and len(_processes_in(work)) >= 3  # the stage, torchrun, 2 workers
    os.killpg(leader.pid, signal.SIGKILL)  # what `kill -9 -- -<pgid>` of `setsid dvc repro` does
    leader.wait()
    deadline = time.monotonic() + 30
    while _processes_in(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(work) == [], "a worker survived its launcher"
    time.sleep(1)
    assert not (work / "models" / "chexnet_model.pth").exists()


def test_a_checkpoint_from_another_image_size_is_not_resumed(tmp_path: Path):
    work = _workdir(tmp_path, epochs=3)
    _kill_after_first_checkpoint(work)
    cache = work / "data" / "prepared" / "images.npy"
    np.save(cache, np.resize(np.load(cache), (48, 40, 40)))  # prepare rerun at another image_size
    result = _run(work, sys.executable, STAGE)
    assert "other settings or data" in result.stderr
    assert json.loads((work / "reports" / "train.json").read_text())["resumed_from_epoch"] == 0
