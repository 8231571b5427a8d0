"""Atomic file outputs: every file a stage writes appears whole or not at all.

DVC caches whatever a stage leaves behind, so a stage killed half-way must never leave a half file at
an output path. Each writer here writes to a temporary file in the destination folder and renames it
into place (``os.replace`` is atomic on one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: set it straight back
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; an output gets the user's usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as error:
        if error.errno is not None and error.filename in (None, str(tmp), tmp):
            # numpy, torch and pandas writes lose the path, or name the temporary: name the output
            raise OSError(error.errno, error.strerror or str(error), str(target)) from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` atomically, with the same bytes for the same tensors.

    Saved to a path, torch names the archive inside after the file, here the random temporary name,
    so identical weights would differ byte for byte and DVC would rerun every stage after an unchanged
    model. Saved into an open file, the archive name is fixed.
    """
    import torch

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            torch.save(obj, handle)

    return write_with(path, save)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON with a trailing newline and stable key order (diffs and ``dvc metrics diff`` read it)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def require(*files: str | os.PathLike[str], made_by: str) -> None:
    """Stop with one line naming the first missing input and the stage that makes it."""
    from chexnet.core.errors import ChexnetError

    for path in files:
        if not Path(path).exists():
            raise ChexnetError(f"{path} does not exist: run the {made_by} stage first (dvc repro {made_by})")


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file another stage (or a person) wrote; a corrupt or cut-short one is the user's to fix,
    said in one line with its path, never a ``JSONDecodeError`` traceback."""
    from chexnet.core.errors import ChexnetError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ChexnetError(
            f"{path} is not valid JSON ({error}); it is damaged or incomplete: rerun the stage that "
            "writes it, or restore the file"
        ) from error


def require_writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Make ``path`` and prove a file can be written there, before any long work whose result would
    otherwise be lost (e.g. heat maps after all inference)."""
    from chexnet.core.errors import ChexnetError

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ChexnetError(
            f"{what} {folder} cannot be written ({error.strerror or error}); choose a writable folder"
        ) from error
    return folder


def require_writable_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a file to write: not an existing folder, in a folder that can be written (made if
    missing), said with the option's name before any work whose result would be lost."""
    from chexnet.core.errors import ChexnetError

    target = Path(path)
    if target.is_dir():
        example = target / "model.pth"
        raise ChexnetError(f"{what} {target} is a folder; give a file name inside it, e.g. {example}")
    require_writable_dir(target.parent if str(target.parent) else Path("."), f"{what}: the folder of")
    return target


def write_parquet(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas DataFrame as Parquet, without the pandas index."""
    return write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_csv(path: str | os.PathLike[str], frame: Any) -> Path:
    return write_with(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(path: str | os.PathLike[str], figure: Any, **kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG atomically and close it (figures in loops must not pile up)."""
    import matplotlib.pyplot as plt

    try:
        return write_with(path, lambda tmp: figure.savefig(tmp, format="png", **kwargs))
    finally:
        plt.close(figure)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 (hex): what a model record names its source file by."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
