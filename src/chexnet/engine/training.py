"""The training loop: the seed's recipe (Adam, BCE, epochs, batch size) at the hardware's speed.

Read :func:`fit` first: it is the epoch loop and nothing else. Its steps are :func:`build_run` (net,
optimiser, scaler, scheduler, criterion, precision), :func:`train_one_epoch`, :func:`validate`, the
choice of the best epoch (:meth:`Progress.record`, with the run's state in :mod:`chexnet.engine.state`)
and the resume point (:class:`ResumeState`, :mod:`chexnet.engine.resume`); the loss is
:mod:`chexnet.engine.loss`'s.

- Data: uint8 batches from the prepared cache (memory map, DataLoader workers, pinned memory),
  normalised and optionally flipped on the device (:mod:`chexnet.engine.inference`).
- Speed on CUDA: mixed precision (bf16 where supported, else fp16 with a gradient scaler), cuDNN
  autotuning, optional channels_last and ``torch.compile``. On a CPU with native bf16 (AVX512-BF16,
  AMX): bf16 autocast, channels_last and DenseNet's memory-efficient layers, 2.5× the fp32 speed in
  half the memory (benchmarks/README.md); fp32 on other CPUs.
- Scale: one process, or many under ``torchrun`` (DistributedDataParallel, distributed samplers,
  metrics reduced across processes).
- Robustness: a resume point after every epoch (model, optimiser, scaler, scheduler, RNG states,
  history) that a rerun resumes from, ending with the same model as an uninterrupted run; a non-finite
  loss stops training naming the epoch and batch.
- Selection: the best epoch by validation mean AUROC is the model kept; early stopping, LR on plateau
  and ``pos_weight`` are options, off by default to match the seed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelList
from chexnet.data.dataset import CachedImages
from chexnet.engine.distributed import Context, barrier, sum_all
from chexnet.engine.inference import (
    SINGLE,
    make_loader,
    predict_loader,
    prepare_batch,
)
from chexnet.engine.loss import MaskedBCEWithLogitsLoss, positive_weights
from chexnet.engine.resume import ResumeState
from chexnet.engine.state import EpochRecord, FitResult, Placement, Progress, Run, TrainOptions
from chexnet.evaluation.classification import mean_auroc, per_class_auroc
from chexnet.model.network import (
    LogitsView,
    Network,
    set_memory_efficient,
)

log = logging.getLogger(__name__)
_CHECK_EVERY_CUDA = 20  # batches between host syncs on a GPU (loss shown, finiteness checked)


class NonFiniteLossError(ChexnetError, RuntimeError):
    """The loss became NaN or infinite; training stops instead of saving a broken model."""


# --- set-up -----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Same seed, same data → same weights on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The seed's Adam. On CUDA its fused kernel: the same update rule in a few launches instead of
    several per parameter tensor (DenseNet121 has 364), which matters when launches bound the step."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")


def compile_model(net: nn.Module, mode: str = "default") -> nn.Module:
    """``torch.compile`` with static shapes: the last, smaller batch of an epoch gets its own graph
    instead of turning every later step into a slower dynamic-shape one."""
    return torch.compile(net, mode=None if mode == "default" else mode, dynamic=False)


def build_run(
    model: Network,
    train_labels: torch.Tensor,
    options: TrainOptions,
    ctx: Context,
    placement: Placement | None = None,
) -> Run:
    """The network on its device in its memory layout, wrapped for DDP and compilation, and the
    optimiser, gradient scaler (fp16 only), LR scheduler (when asked) and loss. ``placement``: the one
    resolved by the caller for the whole run (resolved here from ``options`` when not given)."""
    device = ctx.device
    placement = placement or Placement.of(options, device)
    precision = placement.precision
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_memory_efficient(model, placement.memory_efficient)
    model.to(device, memory_format=precision.memory_format)
    net: nn.Module = LogitsView(model)
    if ctx.distributed:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    if options.compile:
        net = compile_model(net, options.compile_mode)
    optimizer = make_optimizer(model, options.lr, device)
    scheduler = None
    if options.lr_plateau_patience > 0:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=options.lr_plateau_factor, patience=options.lr_plateau_patience
        )
    pos_weight = positive_weights(train_labels).to(device) if options.pos_weight else None
    return Run(
        model=model,
        net=net,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16),
        scheduler=scheduler,
        criterion=MaskedBCEWithLogitsLoss(pos_weight).to(device),
        placement=placement,
        ctx=ctx,
    )


# --- one epoch --------------------------------------------------------------------------------------
def train_step(
    net: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss. Nothing here waits for the GPU (a CUDA test
    runs it under ``torch.cuda.set_sync_debug_mode("error")``), so the CPU queues steps ahead."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = net(x)
    loss = criterion(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_one_epoch(
    run: Run, loader: DataLoader, epoch: int, epochs: int, *, hflip: bool
) -> tuple[float, float, float]:
    """One pass over the training loader; returns the mean loss and the number of samples, both over
    every process, and the seconds it took."""
    started = time.perf_counter()
    device = run.ctx.device
    run.net.train()
    loader.sampler.set_epoch(epoch)
    total = torch.zeros((), device=device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    count = 0
    check_every = _CHECK_EVERY_CUDA if device.type == "cuda" else 1  # a CPU loses nothing by syncing
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not run.ctx.is_main)
    for batch, (images, labels) in enumerate(bar, start=1):
        x = prepare_batch(
            images, device, hflip=hflip, channels_last=run.channels_last, spec=run.model.input_spec
        )
        labels = labels.to(device, non_blocking=True)
        detached = train_step(run.net, x, labels, run.criterion, run.optimizer, run.scaler, run.dtype)
        total += detached * len(labels)
        count += len(labels)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), batch, first_bad)
        if batch % check_every == 0 or batch == len(loader):
            _stop_if_non_finite(first_bad, epoch)  # one host sync every few batches, not every one
            bar.set_postfix(loss=f"{detached.item():.4f}")
    loss_sum, seen = sum_all(run.ctx, total.item(), float(count))
    return loss_sum / max(seen, 1), seen, time.perf_counter() - started


def validate(run: Run, loader: DataLoader) -> tuple[float, float | None]:
    """Validation loss by the training criterion (masked BCE, ``pos_weight`` when on) and mean AUROC
    (``None`` when no finding has both classes)."""
    scores, truth = predict_loader(
        run.net, loader, run.ctx, precision=run.precision, desc="validate", spec=run.model.input_spec
    )
    val_auroc = mean_auroc(per_class_auroc(truth, scores, [str(j) for j in range(truth.shape[1])]))
    # the probabilities gathered across processes, back to scores (clipped as BCE on probabilities is)
    logits = torch.logit(torch.from_numpy(scores).double(), eps=1e-7)
    with torch.no_grad():
        loss = run.criterion(logits.to(run.ctx.device), torch.from_numpy(truth).double().to(run.ctx.device))
    return float(loss), val_auroc


# --- the loop ---------------------------------------------------------------------------------------
def fit(
    model: Network,
    train_set: CachedImages,
    val_set: CachedImages,
    options: TrainOptions,
    ctx: Context = SINGLE,
    *,
    checkpoint: Path | None = None,
    run_fingerprint: str = "",
    on_epoch: Callable[[EpochRecord], None] | None = None,
    placement: Placement | None = None,
) -> FitResult:
    """Train ``model`` in place; return the history and the best epoch's weights.

    ``checkpoint``: the resume point, written after every epoch (by rank 0) and resumed from when it
    exists with the same ``run_fingerprint``. ``on_epoch`` is called with each finished epoch, also with
    the epochs replayed from a resume point, so loggers see the whole history. ``placement``: the run's,
    resolved once by the caller (from ``options`` when not given).
    """
    run = build_run(model, train_set.labels, options, ctx, placement)
    train_loader, val_loader = _loaders(train_set, val_set, options, ctx)

    resumed = ResumeState.load(checkpoint, run_fingerprint) if checkpoint is not None else None
    progress, start = (resumed.restore(run), resumed.epoch + 1) if resumed is not None else (Progress(), 1)
    for record in progress.history if on_epoch else ():  # loggers see the epochs done before a restart
        on_epoch(record)

    progress.resumed_from_epoch = start if resumed is not None else 0
    for epoch in range(start, options.epochs + 1):
        if options.early_stopping_patience and progress.stale_epochs >= options.early_stopping_patience:
            progress.stopped_early = True
            log.info("early stopping: no improvement in %d epochs", progress.stale_epochs)
            break
        started = time.perf_counter()
        train_loss, seen, train_seconds = train_one_epoch(
            run, train_loader, epoch, options.epochs, hflip=options.hflip
        )
        val_loss, val_auroc = validate(run, val_loader)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_mean_auroc=val_auroc,
            lr=run.optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
            images_per_second=seen / max(train_seconds, 1e-9),
        )
        score = progress.record(record, model)
        if run.scheduler is not None:
            run.scheduler.step(score)
        if ctx.is_main:
            _log_epoch(record, options.epochs)
            if on_epoch:
                on_epoch(record)
            if checkpoint is not None:
                ResumeState.of(run, progress, epoch, run_fingerprint).save(checkpoint)
        barrier(ctx)
    return progress


def _loaders(
    train_set: CachedImages, val_set: CachedImages, options: TrainOptions, ctx: Context
) -> tuple[DataLoader, DataLoader]:
    """The training loader (shuffled, a last batch of one dropped: BatchNorm needs two) and validation's."""
    shared = {
        "batch_size": options.batch_size,
        "seed": options.seed,
        "num_workers": options.num_workers,
        "device": ctx.device,
        "ctx": ctx,
    }
    train = make_loader(train_set, shuffle=True, drop_single=True, **shared)
    return train, make_loader(val_set, shuffle=False, **shared)


def _log_epoch(record: EpochRecord, epochs: int) -> None:
    shown = "n/a" if record.val_mean_auroc is None else f"{record.val_mean_auroc:.4f}"
    log.info(
        "epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUROC %s, %.0f img/s (%.0f s)",
        record.epoch,
        epochs,
        record.train_loss,
        record.val_loss,
        shown,
        record.images_per_second,
        record.seconds,
    )


def describe(placement: Placement, ctx: Context, pretrained: bool, labels: LabelList) -> str:
    """One log line: where and how this run trains."""
    precision = placement.precision
    return (
        f"training on {placement.device} × {ctx.world_size} process(es), "
        f"{'ImageNet' if pretrained else 'random'} weights, {precision.dtype or 'fp32'}, channels_last "
        f"{precision.channels_last}, memory_efficient {placement.memory_efficient}, {len(labels)} findings "
        f"({labels.source})"
    )


def summary(
    result: FitResult, pretrained: bool, options: TrainOptions, placement: Placement, ctx: Context
) -> dict[str, Any]:
    """``reports/train.json`` (its headline part: ``metrics/train.json``)."""
    history, device = result.history, ctx.device
    rates = [r.images_per_second for r in history if r.epoch > result.resumed_from_epoch]
    precision = placement.precision
    best = result.best_val_mean_auroc
    return {
        "pretrained": pretrained,
        "train_device": f"{device.type} x{ctx.world_size}",
        "learning_rate": options.lr,
        "precision": str(precision.dtype or torch.float32).removeprefix("torch."),
        "channels_last": precision.channels_last,
        "memory_efficient": placement.memory_efficient,
        "epochs_trained": len(history),
        "best_epoch": result.best_epoch,
        "best_val_mean_auroc": None if best is None else round(best, 6),
        "final_train_loss": round(history[-1].train_loss, 6),
        "final_val_loss": round(history[-1].val_loss, 6),
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_images_per_second": round(sum(rates) / max(len(rates), 1), 2),
        "epoch_seconds": [round(r.seconds, 1) for r in history],
    }


class EpochLogger:
    """Per-epoch losses, validation mean AUROC and learning rate to dvclive (``dvclive/``), which
    ``dvc plots`` draws. ``dvcyaml=False``: dvc.yaml declares dvclive's files itself, unedited."""

    def __init__(self, directory: Path):
        from dvclive import Live

        self.live = Live(dir=str(directory), dvcyaml=False, save_dvc_exp=False)

    def __call__(self, record: EpochRecord) -> None:
        self.live.log_metric("train/loss", record.train_loss)
        self.live.log_metric("val/loss", record.val_loss)
        if record.val_mean_auroc is not None:
            self.live.log_metric("val/mean_auroc", record.val_mean_auroc)
        self.live.log_metric("train/lr", record.lr)
        self.live.next_step()

    def end(self) -> None:
        self.live.end()


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch}, batch {bad}; stopping")
