"""The training run's state, in one module that the loop (:mod:`chexnet.engine.training`) and its resume
point (:mod:`chexnet.engine.resume`) both import, so neither imports the other.

:class:`TrainOptions` is what a run was asked for, :class:`Placement` how it computes on its device
(resolved once), :class:`Run` what it steps with, :class:`EpochRecord` one finished epoch and
:class:`Progress` the loop's state: every field the resume point saves and restores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from chexnet.config.common import CommonParams
from chexnet.config.stage import StageParams
from chexnet.config.train import TrainParams
from chexnet.engine.distributed import Context
from chexnet.engine.inference import Precision, on_cpu_by_default
from chexnet.model.network import Network

_DEFAULTS = CommonParams()  # the defaults live in the params schema, nowhere else
LR_PRETRAINED = 1e-4  # the seed's Adam learning rate, for a model that starts from trained weights
LR_FROM_SCRATCH = 3e-4  # from random initialisation 1e-4 learns too little in a 5-epoch demo (measured)


def learning_rate(lr: float | str, pretrained: bool) -> float:
    """``lr: auto`` is the seed's 1e-4 where the seed's setting holds (ImageNet or other trained weights)
    and 3e-4 from random initialisation, where 1e-4 learns too slowly for a 5-epoch run (measured:
    benchmarks/README.md, "The demo"); a number is used as it is."""
    if lr != "auto":
        return float(lr)
    return LR_PRETRAINED if pretrained else LR_FROM_SCRATCH


@dataclass(frozen=True)
class TrainOptions(TrainParams):
    """What :func:`chexnet.engine.training.fit` needs: the ``train:`` section exactly as the params schema
    declares it (its fields, defaults and meaning are inherited from
    :class:`chexnet.config.train.TrainParams`, never listed twice), plus the seed's recipe from the top
    level, with ``lr`` resolved to a number."""

    epochs: int = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    lr: float = LR_PRETRAINED
    seed: int = _DEFAULTS.seed
    num_workers: int = _DEFAULTS.num_workers

    @classmethod
    def from_params(cls, params: StageParams, pretrained: bool) -> TrainOptions:
        """``pretrained``: whether the model starts from trained weights (what ``lr: auto`` depends on)."""
        return cls(
            **asdict(params.train),
            epochs=params.epochs,
            batch_size=params.batch_size,
            seed=params.seed,
            num_workers=params.num_workers,
            lr=learning_rate(params.lr, pretrained),
        )


@dataclass(frozen=True)
class Placement:
    """How a run computes on its device, resolved once from ``train.amp``, ``train.channels_last`` and
    ``train.memory_efficient``: the log line, the loop, the model's record and ``reports/train.json`` all
    read this one value, so they cannot disagree about what the run did."""

    device: torch.device
    precision: Precision  # autocast dtype and memory layout
    memory_efficient: bool  # DenseNet's checkpointed dense layers

    @classmethod
    def of(cls, options: TrainOptions, device: torch.device) -> Placement:
        return cls(
            device=device,
            precision=Precision.of(options.amp, options.channels_last, device),
            memory_efficient=on_cpu_by_default(options.memory_efficient, device),
        )


@dataclass
class Run:
    """Everything one training run steps with, built once by :func:`chexnet.engine.training.build_run`."""

    model: Network  # the weights saved (unwrapped)
    net: nn.Module  # what is called: LogitsView, under DDP and torch.compile when asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    criterion: nn.Module
    placement: Placement
    ctx: Context

    @property
    def precision(self) -> Precision:
        return self.placement.precision

    @property
    def dtype(self) -> torch.dtype | None:
        return self.precision.dtype

    @property
    def channels_last(self) -> bool:
        return self.precision.channels_last


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_mean_auroc: float | None
    lr: float
    seconds: float
    images_per_second: float


@dataclass
class Progress:
    """The loop's state, in one place: every epoch's record, the best epoch so far and its weights, the
    epochs since it, and how the run started and ended. The resume point saves and restores every field
    of it generically, so a field added here survives a resume without being listed anywhere else; it
    is also what :func:`chexnet.engine.training.fit` returns (:data:`FitResult`)."""

    history: list[EpochRecord] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    best_val_mean_auroc: float | None = None
    best_score: float = -np.inf
    stale_epochs: int = 0
    resumed_from_epoch: int = 0
    stopped_early: bool = False

    def record(self, record: EpochRecord, model: Network) -> float:
        """Add an epoch; keep a copy of the weights when it is the best so far. Returns its score
        (validation mean AUROC, or minus the validation loss when AUROC is undefined)."""
        self.history.append(record)
        score = record.val_mean_auroc if record.val_mean_auroc is not None else -record.val_loss
        if score > self.best_score:
            self.best_score, self.stale_epochs = score, 0
            self.best_epoch, self.best_val_mean_auroc = record.epoch, record.val_mean_auroc
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.stale_epochs += 1
        return score

    def to_state(self) -> dict[str, Any]:
        """Every field, in types ``torch.load(weights_only=True)`` reads back (records as dicts)."""
        state = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        state["history"] = [asdict(r) for r in self.history]
        state["best_score"] = float(self.best_score)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """The inverse of :meth:`to_state`; a field the file does not hold keeps its default."""
        known = {spec.name for spec in fields(cls)}
        values = {name: value for name, value in state.items() if name in known}
        values["history"] = [EpochRecord(**record) for record in state.get("history", [])]
        return cls(**values)


FitResult = Progress  # what fit returns: the loop's state when it ended
