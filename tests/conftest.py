"""Shared fixtures: tiny images and tables made on the fly (tests never need the network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
