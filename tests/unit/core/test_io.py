from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chexnet.core import io
from chexnet.core.errors import ChexnetError


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


def test_a_read_only_output_folder_is_refused_by_the_io_helper(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ChexnetError, match="cannot be written"):
        io.require_writable_dir(blocker / "maps", "--out")


def test_a_failed_write_names_the_output_not_the_temporary(tmp_path: Path, monkeypatch):
    import errno
    import os

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        io.write_text(tmp_path / "out.json", "{}")
    assert caught.value.filename == str(tmp_path / "out.json") and caught.value.errno == errno.ENOSPC
