"""The training loop's resume point: what a rerun needs to go on as if never stopped.

:class:`chexnet.engine.state.Progress` holds every field of the loop's state once; :class:`ResumeState`
saves it with the model, optimiser, scaler, scheduler and RNG states after every epoch, in types that
``torch.load(weights_only=True)`` reads, and is used only when its fingerprint (settings and data)
matches the run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexnet.core import io
from chexnet.core.labels import LabelList
from chexnet.engine.state import Progress, Run, TrainOptions

log = logging.getLogger(__name__)


def fingerprint(settings: dict[str, Any], files: list[Path]) -> str:
    """What a checkpoint must match to be resumed: training settings and the data it was trained on."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        with path.open("rb") as handle:  # in blocks: the image cache may be gigabytes
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def run_fingerprint(
    options: TrainOptions, weights: str, world_size: int, labels: LabelList, prepared: list[Path]
) -> str:
    """The fingerprint a resume point must match: the training settings (``epochs`` left out: a killed
    run may be extended), the initial weights, the process count, the label list, and the bytes of the
    ``prepared`` files (the split, the index, the labels and the image cache: another image size is
    another run)."""
    settings = asdict(options) | {"weights": weights, "world_size": world_size, "labels": list(labels.names)}
    for where_not_what in ("epochs", "processes", "checkpoint_dir"):  # world_size says the processes
        settings.pop(where_not_what)
    return fingerprint(settings, prepared)


def _rng_state() -> dict[str, Any]:
    """RNG states in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))


@dataclass
class ResumeState:
    """The resume point written after every epoch (``<train.checkpoint_dir>/train_checkpoint.pt``).

    Not the model that is kept (that is ``models/chexnet_model.pth``, the best epoch's weights): this is
    everything needed to go on as if never stopped. It is used only when its ``fingerprint`` (settings
    and data) matches the run's; an unreadable or foreign file is skipped with a warning, never fatal.
    """

    fingerprint: str
    epoch: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    progress: Progress

    @classmethod
    def of(cls, run: Run, progress: Progress, epoch: int, fingerprint: str) -> ResumeState:
        return cls(
            fingerprint=fingerprint,
            epoch=epoch,
            model=run.model.state_dict(),
            optimizer=run.optimizer.state_dict(),
            scaler=run.scaler.state_dict(),
            scheduler=run.scheduler.state_dict() if run.scheduler is not None else {},
            rng=_rng_state(),
            progress=progress,
        )

    def save(self, path: Path) -> None:
        """One plain dict of tensors and numbers, written atomically (``torch.load(weights_only=True)``)."""
        state = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        io.write_torch(path, state | {"progress": self.progress.to_state()})

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> ResumeState | None:
        """The state at ``path`` if there is one, it can be read, and it was written for this run."""
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            values = {spec.name: state[spec.name] for spec in fields(cls) if spec.name != "progress"}
            loaded = cls(**values, progress=Progress.from_state(state["progress"]))
        except Exception as error:  # truncated zip, foreign pickle or dict: start again rather than fail
            log.warning(
                "ignoring %s: it cannot be read (%s); training starts from epoch 1",
                path,
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
            )
            return None
        if loaded.fingerprint != fingerprint:
            log.warning("ignoring %s: it was written for other settings or data", path)
            return None
        return loaded

    def restore(self, run: Run) -> Progress:
        """Put the model, optimiser, scaler, scheduler and RNGs back where they were after ``epoch``."""
        run.model.load_state_dict(self.model)
        run.optimizer.load_state_dict(self.optimizer)
        run.scaler.load_state_dict(self.scaler)
        if run.scheduler is not None and self.scheduler:
            run.scheduler.load_state_dict(self.scheduler)
        _set_rng_state(self.rng)
        log.info("resuming after epoch %d", self.epoch)
        return self.progress
