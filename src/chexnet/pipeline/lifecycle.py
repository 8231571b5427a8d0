"""How a stage process ends: with its launcher, on a signal, and never with params it was not run with.

``dvc repro`` runs each stage as a child process. DVC ignores SIGINT while its child runs (Ctrl-C in a
terminal reaches the whole process group, so the stage gets it itself), and a plain ``kill`` (SIGTERM)
of ``dvc`` ends DVC alone: the stage would go on training and rewriting ``models/`` behind its back,
beside any rerun. So a stage

- turns SIGTERM into :class:`Terminated` (a ``KeyboardInterrupt``), so that ``finally`` blocks remove
  temporary files and no half output is left, exactly as after Ctrl-C;
- watches its launcher (the parent, and the shell's parent when a shell sits between) and terminates
  itself when that is gone;
- snapshots the params it depends on (its ``params:`` in ``dvc.yaml``) when it starts and refuses to
  finish when they changed on disk meanwhile, because DVC writes ``dvc.lock`` from the file as it is
  *after* the stage, and would record values the outputs were not made with.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from chexnet.config.schema import read_yaml
from chexnet.core.errors import ChexnetError

log = logging.getLogger(__name__)

SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh"})
WATCH_INTERVAL_S = 0.5


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that cleanup runs."""


class ParamsChangedError(ChexnetError):
    """The params file changed while the stage ran: its outputs belong to the old values."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def handle_sigterm() -> None:
    """SIGTERM (a plain ``kill``, a CI cancel, a scheduler, the launcher watch) ends the stage like Ctrl-C."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _parent_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def launchers() -> list[tuple[int, int | None]]:
    """``(pid, its parent)`` pairs to watch: this process's parent, and, when that is a shell (``bash -c``
    that did not exec), the shell's parent too. Empty off Linux (no ``/proc``)."""
    parent = os.getppid()
    watched = [(os.getpid(), parent)]
    if _name_of(parent) in SHELLS:
        watched.append((parent, _parent_of(parent)))
    return (
        [(pid, ppid) for pid, ppid in watched if ppid not in (None, 0, 1)] if Path("/proc").is_dir() else []
    )


def watch_launcher(interval: float = WATCH_INTERVAL_S) -> threading.Thread | None:
    """A daemon thread that sends this process SIGTERM once its launcher has gone (the process was
    reparented). Nothing to watch when started by init or off Linux."""
    watched = launchers()
    if not watched:
        return None

    def watch() -> None:
        event = threading.Event()
        while not event.wait(interval):
            if any(_parent_of(pid) != ppid for pid, ppid in watched):
                log.error("the process that started this stage (dvc) has gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="launcher-watch", daemon=True)
    thread.start()
    return thread


def stage_param_keys(stage: str, dvc_yaml: str | Path = "dvc.yaml") -> list[str] | None:
    """The params ``stage`` lists in ``dvc.yaml`` (what DVC records for it); ``None`` when unknown."""
    path = Path(dvc_yaml)
    if not path.is_file():
        return None
    try:
        document = read_yaml(path.read_text(encoding="utf-8"), path)
        entries = document["stages"][stage]["params"]
    except (ChexnetError, KeyError, TypeError):
        return None
    if any(isinstance(entry, dict) and not entry.get("params.yaml", True) for entry in entries):
        return None  # "- params.yaml:" with no keys: DVC tracks every param of the file
    return [entry for entry in entries if isinstance(entry, str)]


def _lookup(raw: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return None
        raw = raw[part]
    return raw


def params_snapshot(params_file: str | Path, keys: list[str] | None) -> dict[str, Any]:
    """The values of ``keys`` (all of the file when ``None``) as DVC reads them."""
    path = Path(params_file)
    raw = read_yaml(path.read_text(encoding="utf-8"), path) if path.is_file() else {}
    if keys is None:
        return {"": raw}
    return {key: _lookup(raw, key) for key in keys}


def require_unchanged(params_file: str | Path, keys: list[str] | None, before: dict[str, Any]) -> None:
    """Fail, naming each changed key with its old and new value, when the file moved under the stage."""
    try:
        after = params_snapshot(params_file, keys)
    except ChexnetError as error:
        raise ParamsChangedError(
            f"{params_file} changed while the stage ran and is now invalid: {error}"
        ) from error
    changed = {key: (before[key], after.get(key)) for key in before if before[key] != after.get(key)}
    if changed:
        listed = "; ".join(f"{key or 'the file'}: {old!r} → {new!r}" for key, (old, new) in changed.items())
        raise ParamsChangedError(
            f"{params_file} changed while the stage ran ({listed}): its outputs were made with the old "
            "values, so this run is not recorded; run dvc repro again"
        )
