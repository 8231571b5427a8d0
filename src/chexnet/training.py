"""The training loop: the seed's recipe (Adam, BCE, epochs, batch size) at the hardware's speed.

- Data: uint8 batches from the prepared cache (memory map, DataLoader workers, pinned memory),
  normalised and optionally flipped on the device, batched.
- Speed on CUDA: mixed precision (bf16 where supported, else fp16 with a gradient scaler), cuDNN
  autotuning, optional channels_last and ``torch.compile``. On a CPU with native bf16 (AVX512-BF16,
  AMX): bf16 autocast, channels_last and DenseNet's memory-efficient layers, 2.5× the fp32 speed in
  half the memory (benchmarks/README.md); fp32 on other CPUs.
- Scale: one process, or many under ``torchrun`` (DistributedDataParallel, distributed samplers,
  metrics reduced across processes).
- Robustness: a checkpoint after every epoch (model, optimiser, scaler, scheduler, RNG states, history)
  that a rerun resumes from, ending with the same model as an uninterrupted run; a non-finite loss
  stops training naming the epoch and batch.
- Selection: the best epoch by validation mean AUROC is the model kept; early stopping, LR on plateau
  and ``pos_weight`` are options, off by default to match the seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from chexnet import io
from chexnet.dataset import CachedImages, normalize_batch
from chexnet.distributed import Context, barrier, gather_rows, sum_all
from chexnet.errors import ChexnetError
from chexnet.evaluation import tta_views
from chexnet.metrics import mean_auroc, per_class_auroc
from chexnet.model import CheXNet, LogitsView, set_memory_efficient

log = logging.getLogger(__name__)
SINGLE = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
_CHECK_EVERY_CUDA = 20  # batches between host syncs on a GPU (loss shown, finiteness checked)


class NonFiniteLossError(ChexnetError, RuntimeError):
    """The loss became NaN or infinite; training stops instead of saving a broken model."""


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 42
    num_workers: int = 0
    amp: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: bf16 where native) | bf16 | fp16 | off
    channels_last: bool | str = "auto"  # auto: on for CPU, off for CUDA
    memory_efficient: bool | str = "auto"  # DenseNet's checkpointed dense layers; auto: on for CPU
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode (params.COMPILE_MODES)
    hflip: bool = False
    pos_weight: bool = False
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0 = off
    lr_plateau_patience: int = 0  # epochs without improvement before lr *= factor; 0 = off
    lr_plateau_factor: float = 0.1


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
class FitResult:
    history: list[EpochRecord] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    best_val_mean_auroc: float | None = None
    resumed_from_epoch: int = 0
    stopped_early: bool = False


# --- set-up -----------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Same seed, same data → same weights on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as torch's own cpuinfo reports.

    Asked, not tried: an autocast that merely runs (CPUs without these emulate bf16 through fp32 AVX512,
    or fall back to slow reference kernels) says nothing about whether it is faster.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def amp_dtype(option: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``option`` on ``device`` (``None``: full fp32)."""
    if option not in ("auto", "bf16", "fp16", "off"):
        raise ChexnetError(f"train.amp must be auto, bf16, fp16 or off, got {option!r}")
    if option == "off":
        return None
    if option == "auto" and device.type != "cuda":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if option == "fp16" and device.type != "cuda":
        raise ChexnetError("train.amp: fp16 needs CUDA; use bf16 or off on CPU")
    if option == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if option == "bf16" else torch.float16


def on_cpu_by_default(option: bool | str, device: torch.device) -> bool:
    """``auto`` settings that pay on a CPU and not on a GPU (measured: benchmarks/README.md, "CPU levers"):
    channels_last (faster on CPU, slower on CUDA at batch 32) and memory_efficient (on a CPU, RAM is what
    a laptop runs out of; on a GPU the recomputation costs time that memory does not need)."""
    return device.type == "cpu" if option == "auto" else bool(option)


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The seed's Adam. On CUDA its fused kernel: the same update rule in a few launches instead of
    several per parameter tensor (DenseNet121 has 364), which matters when launches bound the step."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")


def compile_model(net: nn.Module, mode: str = "default") -> nn.Module:
    """``torch.compile`` with static shapes: the last, smaller batch of an epoch gets its own graph
    instead of turning every later step into a slower dynamic-shape one."""
    return torch.compile(net, mode=None if mode == "default" else mode, dynamic=False)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    device: torch.device,
    ctx: Context = SINGLE,
) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): what makes resumed runs identical.

    A DistributedSampler serves one process (whole dataset) or many (a shard each) alike; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=False
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def prepare_batch(
    images: torch.Tensor, device: torch.device, *, hflip: bool, channels_last: bool
) -> torch.Tensor:
    """uint8 batch → normalised float on the device; random horizontal flips there, not per sample."""
    x = normalize_batch(images, device, channels_last=channels_last)
    if hflip:
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return x


class MaskedBCEWithLogitsLoss(nn.Module):
    """``BCEWithLogitsLoss`` over the known labels only: NaN targets (CheXpert-style uncertain or blank
    entries under the ``ignore`` policy) add nothing to the loss or its gradient. With no NaN it is the
    mean over every entry, exactly ``BCEWithLogitsLoss()``. Nothing here waits for the GPU."""

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.where(known, targets, 0.0), pos_weight=self.pos_weight, reduction="none"
        )
        return (losses * known).sum() / known.sum().clamp(min=1)


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """``pos_weight`` per class: known negatives / known positives (masked entries count as neither)."""
    known = ~torch.isnan(labels)
    positives = torch.where(known, labels, 0.0).sum(dim=0).clamp(min=1)
    return (known.sum(dim=0) - positives).clamp(min=0) / positives


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


# --- prediction -------------------------------------------------------------------------------------
@torch.no_grad()
def _predict(
    net: nn.Module,
    loader: DataLoader,
    ctx: Context,
    dtype: torch.dtype | None,
    channels_last: bool,
    desc: str,
    tta: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    scores, truth = [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not ctx.is_main):
        x = prepare_batch(images, ctx.device, hflip=False, channels_last=channels_last)
        with torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None):
            views = [torch.sigmoid(net(view).float()) for view in tta_views(x, tta)]
        scores.append(torch.stack(views).mean(dim=0).cpu())
        truth.append(labels)
    order = torch.as_tensor(list(iter(loader.sampler)), dtype=torch.long)
    total = len(loader.dataset)
    s = gather_rows(ctx, torch.cat(scores), order, total)
    t = gather_rows(ctx, torch.cat(truth), order, total)
    return s.numpy(), t.numpy()


def predict(
    model: CheXNet, loader: DataLoader, device: torch.device, desc: str = "predict", tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels for every sample of ``loader``, in dataset order (one process, fp32).

    ``tta``: average the probabilities over test-time views (``evaluation.tta_views``).
    """
    ctx = Context(rank=0, world_size=1, local_rank=0, device=device)
    return _predict(LogitsView(model.to(device)), loader, ctx, None, False, desc, tta)


def _bce(scores: np.ndarray, truth: np.ndarray) -> float:
    """Validation loss over the known (unmasked) entries."""
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    known = ~np.isnan(truth)
    t = np.where(known, truth, 0.0)
    losses = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    return float(losses[known].mean()) if known.any() else 0.0


# --- checkpoints ------------------------------------------------------------------------------------
def fingerprint(settings: dict[str, Any], files: list[Path]) -> str:
    """What a checkpoint must match to be resumed: training settings and the data it was trained on."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        with path.open("rb") as handle:  # in blocks: the image cache may be gigabytes
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


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


# --- the loop ---------------------------------------------------------------------------------------
def fit(
    model: CheXNet,
    train_set: CachedImages,
    val_set: CachedImages,
    options: TrainOptions,
    ctx: Context = SINGLE,
    *,
    checkpoint: Path | None = None,
    run_fingerprint: str = "",
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; return the history and the best epoch's weights.

    ``checkpoint``: written after every epoch (by rank 0) and resumed from when it exists with the
    same ``run_fingerprint``. ``on_epoch`` is called with each finished epoch, also with the epochs
    replayed from a checkpoint, so loggers see the whole history.
    """
    device = ctx.device
    dtype = amp_dtype(options.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    channels_last = on_cpu_by_default(options.channels_last, device)
    set_memory_efficient(model, on_cpu_by_default(options.memory_efficient, device))
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    net: nn.Module = LogitsView(model)
    if ctx.distributed:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    if options.compile:
        net = compile_model(net, options.compile_mode)

    optimizer = make_optimizer(model, options.lr, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=options.lr_plateau_factor, patience=options.lr_plateau_patience
        )
        if options.lr_plateau_patience > 0
        else None
    )
    pos_weight = positive_weights(train_set.labels).to(device) if options.pos_weight else None
    criterion = MaskedBCEWithLogitsLoss(pos_weight).to(device)

    loader_args = dict(
        batch_size=options.batch_size,
        seed=options.seed,
        num_workers=options.num_workers,
        device=device,
        ctx=ctx,
    )
    train_loader = make_loader(train_set, shuffle=True, **loader_args)
    val_loader = make_loader(val_set, shuffle=False, **loader_args)

    result = FitResult()
    best_score, stale_epochs, start = -np.inf, 0, 1
    state = _read_resume_state(checkpoint) if checkpoint is not None else None
    if state is not None:
        if state.get("fingerprint") != run_fingerprint:
            log.warning("ignoring %s: it was written for other settings or data", checkpoint)
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            if scheduler is not None and state["scheduler"]:
                scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            result.history = [EpochRecord(**record) for record in state["history"]]
            result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
            result.best_val_mean_auroc = state["best_val_mean_auroc"]
            best_score, stale_epochs = state["best_score"], state["stale_epochs"]
            start = result.resumed_from_epoch = state["epoch"] + 1
            log.info("resuming from %s after epoch %d", checkpoint, state["epoch"])
            for record in result.history:
                if on_epoch:
                    on_epoch(record)

    for epoch in range(start, options.epochs + 1):
        if options.early_stopping_patience and stale_epochs >= options.early_stopping_patience:
            result.stopped_early = True
            log.info("early stopping: no improvement in %d epochs", stale_epochs)
            break
        started = time.perf_counter()
        net.train()
        train_loader.sampler.set_epoch(epoch)
        total = torch.zeros((), device=device, dtype=torch.float64)
        first_bad = torch.full((), -1, device=device, dtype=torch.long)
        count = 0
        check_every = _CHECK_EVERY_CUDA if device.type == "cuda" else 1  # a CPU loses nothing by syncing
        bar = tqdm(
            train_loader, desc=f"epoch {epoch}/{options.epochs}", unit="batch", disable=not ctx.is_main
        )
        for batch, (images, labels) in enumerate(bar, start=1):
            x = prepare_batch(images, device, hflip=options.hflip, channels_last=channels_last)
            labels = labels.to(device, non_blocking=True)
            detached = train_step(net, x, labels, criterion, optimizer, scaler, dtype)
            total += detached * len(labels)
            count += len(labels)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), batch, first_bad)
            if batch % check_every == 0 or batch == len(train_loader):
                _stop_if_non_finite(first_bad, epoch)  # one host sync every few batches, not every one
                bar.set_postfix(loss=f"{detached.item():.4f}")
        loss_sum, seen = sum_all(ctx, total.item(), float(count))
        train_seconds = time.perf_counter() - started

        scores, truth = _predict(net, val_loader, ctx, dtype, channels_last, "validate")
        val_auroc = mean_auroc(per_class_auroc(truth, scores, [str(j) for j in range(truth.shape[1])]))
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss_sum / max(seen, 1),
            val_loss=_bce(scores, truth),
            val_mean_auroc=val_auroc,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
            images_per_second=seen / max(train_seconds, 1e-9),
        )
        result.history.append(record)
        score = val_auroc if val_auroc is not None else -record.val_loss
        if score > best_score:
            best_score, stale_epochs = score, 0
            result.best_epoch, result.best_val_mean_auroc = epoch, val_auroc
            result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale_epochs += 1
        if scheduler is not None:
            scheduler.step(score)
        if ctx.is_main:
            shown = "n/a" if val_auroc is None else f"{val_auroc:.4f}"
            log.info(
                "epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUROC %s, %.0f img/s (%.0f s)",
                epoch,
                options.epochs,
                record.train_loss,
                record.val_loss,
                shown,
                record.images_per_second,
                record.seconds,
            )
            if on_epoch:
                on_epoch(record)
            if checkpoint is not None:
                state = {
                    "fingerprint": run_fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else {},
                    "rng": _rng_state(),
                    "history": [asdict(r) for r in result.history],
                    "best_state": result.best_state,
                    "best_epoch": result.best_epoch,
                    "best_val_mean_auroc": result.best_val_mean_auroc,
                    "best_score": float(best_score),
                    "stale_epochs": stale_epochs,
                }
                io.write_torch(checkpoint, state)
        barrier(ctx)
    return result


def _read_resume_state(checkpoint: Path) -> dict[str, Any] | None:
    """The resume state, or ``None`` when there is none or it cannot be read (a kill during a write on a
    file system without atomic rename, a foreign file): a broken checkpoint is skipped, never fatal."""
    if not checkpoint.exists():
        return None
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle: start again rather than fail every run
        log.warning(
            "ignoring %s: it cannot be read (%s); training starts from epoch 1",
            checkpoint,
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
        )
        return None
    return state if isinstance(state, dict) else None


def _stop_if_non_finite(first_bad: torch.Tensor, epoch: int) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise NonFiniteLossError(f"the loss became NaN or infinite at epoch {epoch}, batch {bad}; stopping")
