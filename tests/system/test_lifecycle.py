"""How stages end under ``dvc repro``: signals, a launcher that goes away, params edited meanwhile, and
the documented two-machine torchrun command on loopback.

Each DVC case is a small real DVC repo around the tiny prepared cache of ``make_workdir``: ``dvc.yaml``
with the train (or prepare) stage as the pipeline declares it, ``dvc repro`` started in its own session
as a terminal or a scheduler would, then SIGTERM to ``dvc`` alone (a plain ``kill``, a CI cancel) or
SIGINT to its process group (Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import REPO, free_port, make_workdir, process_env
from tests.system.test_train_stage import _processes_in

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")
TRAIN, PREPARE = str(REPO / "stages" / "train.py"), str(REPO / "stages" / "prepare.py")


def _run(cwd: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=process_env(), capture_output=True, text=True, timeout=600)


def _dvc_repo(work: Path, stage: str, params: list[str], deps: list[str], outs: list[str]) -> Path:
    """``work`` as a git + DVC repo whose ``dvc.yaml`` holds one stage, declared as the pipeline does."""
    script = TRAIN if stage == "train" else PREPARE
    pipeline = {"stages": {stage: {"cmd": f"{sys.executable} {script}", "deps": deps, "params": params,
                                   "outs": outs}}}  # fmt: skip
    (work / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (work / ".gitignore").write_text("checkpoints/\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "tiny"]):  # fmt: skip
        assert _run(work, *command).returncode == 0
    return work


def _train_repo(work: Path, epochs: int, processes: int = 1) -> Path:
    make_workdir(work, epochs=epochs)
    params = {"epochs": epochs, "batch_size": 8, "weights": "none", "device": "cpu", "seed": 3,
              "train": {"processes": processes}, "explain": {"top_k": 3}}  # fmt: skip
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return _dvc_repo(work, "train", ["epochs", "batch_size", "seed", "weights", "device", "train"],
                     ["data/prepared", "data/split.parquet"], ["models/chexnet_model.pth"])  # fmt: skip


def _interruptible() -> None:
    """In the child before it runs: Ctrl-C at its default, as in a terminal's foreground job. pytest
    started in the background of a shell without job control (``cmd &``, as some runners do) ignores
    SIGINT, every process it starts inherits that, and Python then installs no KeyboardInterrupt: a
    Ctrl-C test would see the stage run to its end (seen here: .ci/run started with ``&``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_repro(work: Path) -> subprocess.Popen:
    return subprocess.Popen(["dvc", "repro"], cwd=work, env=process_env(), start_new_session=True,
                            preexec_fn=_interruptible, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists(), (
        f"{path} never appeared; output: {process.stdout.read()[-3000:] if process.stdout else ''}"
    )


def _gone(work: Path, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while _processes_in(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _processes_in(work)


def _no_half_files(work: Path) -> bool:
    return not [p for p in work.rglob("*.tmp") if ".dvc" not in p.parts and ".git" not in p.parts]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def reference(uninterrupted_train_run: Path) -> dict[str, torch.Tensor]:
    """The weights of an uninterrupted run of the same tiny set (4 epochs): what every interrupted run must
    match (tests/conftest.py builds that run once for this module and test_train_stage.py)."""
    return _weights(uninterrupted_train_run / "models" / "chexnet_model.pth")


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_to_dvc_stops_the_stage_and_a_rerun_resumes_to_the_same_weights(
    tmp_path: Path, reference, processes: int
):
    work = _train_repo(tmp_path, epochs=4, processes=processes)
    dvc = _start_repro(work)
    _wait_for(work / "checkpoints" / "train_checkpoint.pt", dvc)
    dvc.send_signal(signal.SIGTERM)  # dvc alone, as `kill <pid>`: its child is not told
    dvc.wait(timeout=60)
    assert _gone(work), "the train stage (or a torchrun worker) went on after dvc had gone"
    time.sleep(1)
    assert not (work / "models" / "chexnet_model.pth").exists() and _no_half_files(work)
    rerun = _run(work, "dvc", "repro")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    resumed = _weights(work / "models" / "chexnet_model.pth")
    report = json.loads((work / "reports" / "train.json").read_text())
    assert report["resumed_from_epoch"] >= 2
    if processes == 1:  # two processes shard the data: other (equally valid) weights than one process
        assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_ctrl_c_to_dvc_repro_stops_training_in_one_line(tmp_path: Path):
    work = _train_repo(tmp_path, epochs=30)
    dvc = _start_repro(work)
    _wait_for(work / "checkpoints" / "train_checkpoint.pt", dvc)
    os.killpg(dvc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground group
    output, _ = dvc.communicate(timeout=60)
    assert dvc.returncode != 0 and "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "train stage interrupted: stopped; no half output was left" in output
    assert _gone(work) and _no_half_files(work)


def _prepare_repo(work: Path, n: int = 400) -> Path:
    (work / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i:08d}_000.png" for i in range(n)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).save(work / "images" / name)
    table = pd.DataFrame({"imagem": names, "patologia": ["Mass" if i % 2 else "No Finding" for i in range(n)],
                          "paciente_id": [str(i) for i in range(n)]})  # fmt: skip
    table.to_parquet(work / "table.parquet")
    params = {"image_size": 64, "data": {"table": "table.parquet", "images": "images", "workers": 2,
                                         "bbox_table": "inputs/none", "min_positives": 1}}  # fmt: skip
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


def test_ctrl_c_during_decoding_stops_prepare_promptly_and_a_rerun_gives_the_same_bytes(tmp_path: Path):
    """The decoder pool used to deadlock here (its feeder waited on a semaphore nobody released)."""
    reference = _prepare_repo(tmp_path / "reference")
    assert _run(reference, sys.executable, PREPARE).returncode == 0
    work = _prepare_repo(tmp_path / "work")
    stage = subprocess.Popen([sys.executable, PREPARE], cwd=work, env=process_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((work / "data" / "prepared").glob(".images.npy.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # in the middle of decoding
    assert stage.poll() is None, "prepare finished before it could be interrupted: give it more images"
    stage.send_signal(signal.SIGINT)
    output, _ = stage.communicate(timeout=20)  # a deadlock would hang here
    assert stage.returncode == 130 and "Traceback" not in output, output
    assert "prepare stage interrupted" in output and _no_half_files(work)
    assert not (work / "data" / "prepared" / "images.npy").exists()
    assert _run(work, sys.executable, PREPARE).returncode == 0
    for name in ("images.npy", "index.parquet", "labels.json", "rejects.csv"):
        assert (work / "data/prepared" / name).read_bytes() == (
            reference / "data/prepared" / name
        ).read_bytes()


def test_sigterm_to_dvc_during_prepare_stops_it(tmp_path: Path):
    work = _dvc_repo(_prepare_repo(tmp_path, n=600), "prepare", ["data", "image_size"],
                     ["table.parquet", "images"], ["data/prepared"])  # fmt: skip
    dvc = _start_repro(work)
    deadline = time.monotonic() + 120
    while not list(work.glob("data/prepared/.images.npy.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    dvc.send_signal(signal.SIGTERM)
    dvc.wait(timeout=60)
    assert _gone(work) and _no_half_files(work)
    assert _run(work, "dvc", "repro").returncode == 0


def test_params_edited_while_training_fail_the_stage_so_dvc_lock_never_records_them(tmp_path: Path):
    work = _train_repo(tmp_path, epochs=3)
    dvc = _start_repro(work)
    _wait_for(work / "checkpoints" / "train_checkpoint.pt", dvc)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["explain"]["top_k"] = 5  # a param train does not read: no reason to fail
    params["epochs"] = 4  # one it does
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    output, _ = dvc.communicate(timeout=300)
    assert dvc.returncode != 0, output
    assert "params.yaml changed while the stage ran (epochs: 3 → 4)" in output and "top_k" not in output
    assert "Traceback" not in output
    status = _run(work, "dvc", "status")
    assert "train" in status.stdout and "up to date" not in status.stdout, status.stdout
    lock = work / "dvc.lock"
    assert not lock.exists() or "epochs: 4" not in lock.read_text()


def test_an_unrelated_param_edited_meanwhile_does_not_fail_the_stage(tmp_path: Path):
    from chexnet.pipeline import lifecycle

    (tmp_path / "params.yaml").write_text("epochs: 3\nexplain: {top_k: 3}\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: x\n    params: [epochs, train]\n")
    keys = lifecycle.stage_param_keys("train", tmp_path / "dvc.yaml")
    before = lifecycle.params_snapshot(tmp_path / "params.yaml", keys)
    (tmp_path / "params.yaml").write_text("# a comment\nepochs: 3\nexplain: {top_k: 9}\n")
    lifecycle.require_unchanged(tmp_path / "params.yaml", keys, before)
    (tmp_path / "params.yaml").write_text("epochs: 4\n")
    with pytest.raises(lifecycle.ParamsChangedError, match=r"epochs: 3 → 4"):
        lifecycle.require_unchanged(tmp_path / "params.yaml", keys, before)


def test_the_documented_two_machine_command_trains_as_two_nodes_on_loopback(tmp_path: Path):
    """docs/training.md's torchrun --nnodes=2 ... --rdzv_backend=c10d line, as two node processes."""
    work = make_workdir(tmp_path, epochs=2)
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                "torchrun",
                "--nnodes=2",
                f"--node_rank={rank}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                TRAIN,
            ],
            cwd=work,
            # one core each, as on two machines: two nodes of all cores each on this one machine's 2
            # cores spin against each other (measured: 44 s for what takes 11 s with one thread each)
            env=process_env() | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    report = json.loads((work / "reports" / "train.json").read_text())
    assert report["train_device"] == "cpu x2" and report["epochs_trained"] == 2
    assert (work / "models" / "chexnet_model.pth").exists()
