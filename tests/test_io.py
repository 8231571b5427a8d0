from pathlib import Path

import pytest
import torch

from chexnet.core import io


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path):
    target = tmp_path / "out" / "metrics.json"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        io.write_with(target, fail)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temp file either


def test_same_weights_give_the_same_bytes(tmp_path: Path):
    """DVC hashes the model file: identical weights must not look changed because of a temp name."""
    state = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.zeros(2)}
    first = io.write_torch(tmp_path / "a" / "model.pth", state)
    second = io.write_torch(tmp_path / "b" / "model.pth", state)
    assert first.read_bytes() == second.read_bytes()
    loaded = torch.load(first, weights_only=True)
    assert torch.equal(loaded["weight"], state["weight"])
