"""Shared fixtures: tiny images and tables made on the fly (tests never need the network)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chexnet.core.labels import NIH14, LabelList, write_labels_json

LABELS = NIH14  # the tiny work dirs use NIH's 14 findings in CheXNet's order
# ONNX exports and engine timings of test models go to a throwaway cache, never the user's ~/.cache
os.environ.setdefault("CHEXNET_CACHE", tempfile.mkdtemp(prefix="chexnet-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_NIH = REPO.parent / "shared" / "data" / "nih"


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


SYSTEM_TIER = REPO / "tests" / "system"
_RUNNING: list[pytest.Item] = []  # the test whose setup, call or teardown is running now


class ProcessOutsideSystemTier(AssertionError):
    """A test outside ``tests/system/`` (or a fixture it set up) started a process: an interpreter, DVC,
    git, a server, a browser."""


def in_system_tier(item: pytest.Item) -> bool:
    return Path(str(item.path)).is_relative_to(SYSTEM_TIER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under ``tests/system/`` carries the ``system`` mark (``-m "not system"``: the fast loop)."""
    for item in items:
        if in_system_tier(item):
            item.add_marker(pytest.mark.system)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    _RUNNING.append(item)
    try:
        return (yield)
    finally:
        _RUNNING.pop()


_real_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self, args, *rest, **options):
    """The fast tiers start no process, in a test or in any fixture it sets up (module and session
    fixtures included: they run inside the first test that needs them). A test that does belongs in
    ``tests/system/``. ``CHEXNET_RECORD_PROCESSES=<file>`` lists such tests there instead of failing."""
    item = _RUNNING[-1] if _RUNNING else None
    if item is not None and not in_system_tier(item):
        record = os.environ.get("CHEXNET_RECORD_PROCESSES")
        if not record:
            raise ProcessOutsideSystemTier(
                f"{item.nodeid} starts a process ({str(args)[:120]}): a test that starts a process, a "
                "server, a browser or DVC belongs in tests/system/"
            )
        with open(record, "a", encoding="utf-8") as log:
            log.write(f"{item.nodeid}\t{str(args)[:160]}\n")
    _real_popen_init(self, args, *rest, **options)


subprocess.Popen.__init__ = _guarded_popen_init


def process_env() -> dict[str, str]:
    """The environment of a process a system test starts: ``python`` and ``dvc`` are this venv's (as
    after ``. .venv/bin/activate``), DVC sends no analytics, and git commits need no user config."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    return env


def committed(path: str) -> bytes:
    """``path`` as the checked-out commit holds it (``git show HEAD:path``): the run the repository
    ships, not what a local ``dvc repro`` rewrote. The README's two commands, ``dvc repro`` then the
    tests, must compose on any CPU, and a CPU without native bf16 trains in fp32 and writes other figures:
    tests of the shipped run's figures read them here. Skips where the checkout is not a git repository."""
    result = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"no committed {path} (not a git checkout?): {result.stderr.decode()[:200]}")
    return result.stdout


@pytest.fixture
def nih_dir() -> Path:
    if not (SHARED_NIH / "Data_Entry_2017_v2020.csv.gz").exists():
        pytest.skip("../shared/data/nih is absent (a user's clone has none)")
    return SHARED_NIH


def save_test_model(path: Path, labels: tuple[str, ...] = LABELS, image_size: int | None = 32, seed: int = 0):
    """A random CheXNet saved as train saves it: the seed-format state_dict and its JSON beside it."""
    from chexnet.model.file import ModelInfo, save_model
    from chexnet.model.network import CheXNet

    torch.manual_seed(seed)
    model = CheXNet(len(labels))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, model.state_dict(), ModelInfo(LabelList(tuple(labels), "nih14"), image_size))
    return model


def make_workdir(root: Path, epochs: int, n: int = 48, size: int = 32) -> Path:
    """A tiny prepared cache and split, as prepare and split would leave them, plus params.yaml."""
    rng = np.random.default_rng(0)
    (root / "data" / "prepared").mkdir(parents=True)
    labels = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[labels[:, 2] == 1, -10:, :] = 255
    np.save(root / "data" / "prepared" / "images.npy", images)
    index = pd.DataFrame(
        {
            "row": np.arange(n),
            "image": [f"{i:08d}_000.png" for i in range(n)],
            "patient": [str(i // 2) for i in range(n)],
        }
    )
    index["width"], index["height"] = 1024, 1024
    index[list(LABELS)] = labels
    index.to_parquet(root / "data" / "prepared" / "index.parquet", index=False)
    write_labels_json(root / "data" / "prepared" / "labels.json", LabelList(LABELS, "nih14"))
    index["split"] = np.array(["val", "test", "train", "train"])[np.arange(n) // 2 % 4]  # 2 images a patient
    index.to_parquet(root / "data" / "split.parquet", index=False)
    params = {"epochs": epochs, "batch_size": 8, "weights": "none", "device": "cpu", "seed": 3}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``chexnet ARGS`` run in this process, answered like ``subprocess.run(capture_output=True)``.

    The command's ``main`` is what ``python -m chexnet`` runs; calling it here skips a new interpreter
    and a torch import per call (seconds each; the fast inner loop runs dozens). Its log lines go to the
    captured stderr in the command's own format, as they would in a process. An exception the command
    does not turn into a message is not caught: the test fails with its traceback, as a process would
    print one. ``tests/test_reliability.py`` keeps real-process runs of the same messages (e2e).
    """
    import contextlib
    import io as text_io
    import logging

    from chexnet.cli.main import main

    out, err = text_io.StringIO(), text_io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with (
            contextlib.chdir(cwd or Path.cwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's usage errors and --help
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["chexnet", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def other_model(tmp_path: Path) -> Path:
    """A model in another folder with its own thresholds, and a decoy models/thresholds.json in cwd
    (tests/test_reliability.py, in process, and its twin in tests/system/, in a real process)."""
    import json

    from PIL import Image

    model = tmp_path / "other" / "chexnet_model.pth"
    save_test_model(model, labels=("Derrame", "Nódulo"), image_size=32)
    own = {"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 0.0, "Nódulo": 1.0}}
    (model.parent / "thresholds.json").write_text(json.dumps(own))
    (tmp_path / "models").mkdir()
    decoy = {"labels": ["Mass"], "thresholds": {"Mass": 0.5}}
    (tmp_path / "models" / "thresholds.json").write_text(json.dumps(decoy))
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(tmp_path / "x.png")
    return model
