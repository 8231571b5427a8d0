"""Fixtures and hooks: the tiers (``system`` marked by path, no process outside it), a throwaway cache,
and small models made on the fly (tests never need the network). Shared helpers: ``tests/helpers.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# ONNX exports and engine timings of test models go to a throwaway cache, never the user's ~/.cache
os.environ.setdefault("CHEXNET_CACHE", tempfile.mkdtemp(prefix="chexnet-test-cache-"))

from tests.helpers import (
    REPO,
    SHARED_NIH,
    TEST_MODEL_SIZE,
    make_workdir,
    process_env,
    save_test_model,
    torch_threads,
)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(torch_threads())


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


@pytest.fixture(scope="session")
def uninterrupted_train_run(tmp_path_factory) -> Path:
    """The train stage run to its end as a real process on :func:`tests.helpers.make_workdir`'s tiny set (4
    epochs, its params): what every killed, signalled and resumed run in tests/system must match, down
    to the weights and dvclive's curves. Built once a session (a whole train process) for
    test_train_stage.py and test_lifecycle.py; tests read it and never write to it."""
    work = make_workdir(tmp_path_factory.mktemp("uninterrupted-train"), epochs=4)
    result = subprocess.run([sys.executable, str(REPO / "stages" / "train.py")], cwd=work, env=process_env(),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return work


@pytest.fixture
def nih_dir() -> Path:
    if not (SHARED_NIH / "Data_Entry_2017_v2020.csv.gz").exists():
        pytest.skip("../shared/data/nih is absent (a user's clone has none)")
    return SHARED_NIH


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """A tiny random model of NIH's 14 findings at ``tmp_path/models/m.pth``, with its record."""
    path = tmp_path / "models" / "m.pth"
    save_test_model(path, image_size=TEST_MODEL_SIZE)
    return path


@pytest.fixture
def other_model(tmp_path: Path) -> Path:
    """A model in another folder with its own thresholds, and a decoy models/thresholds.json in cwd
    (tests/stage/test_cli_files.py, in process, and its twin in tests/system/, in a real process)."""
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
