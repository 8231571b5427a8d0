"""Shared fixtures: tiny images and tables made on the fly (tests never need the network)."""

from __future__ import annotations

import os
import subprocess
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
