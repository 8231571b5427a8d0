"""The training loop: Adam on BCEWithLogitsLoss, loss per batch and per epoch, validation AUROC.

Kept small on purpose (nanoGPT-sized): one function that trains, one that predicts. Batches arrive as
uint8 from the prepared cache and are normalised on the device.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from chexnet.dataset import normalize_batch
from chexnet.errors import ChexnetError
from chexnet.metrics import mean_auroc, per_class_auroc
from chexnet.model import CheXNet

log = logging.getLogger(__name__)


class NonFiniteLossError(ChexnetError, RuntimeError):
    """The loss became NaN or infinite; training stops instead of saving a broken model."""


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_mean_auroc: float | None
    seconds: float


@dataclass
class History:
    epochs: list[EpochRecord] = field(default_factory=list)
    images_seen: int = 0
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    """Same seed, same data → same weights on CPU."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_loader(
    dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int, device: torch.device
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )


@torch.no_grad()
def predict(
    model: CheXNet, loader: DataLoader, device: torch.device, desc: str = "predict"
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels for every sample of ``loader``, in its order."""
    model.eval()
    scores, truth = [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False):
        scores.append(torch.sigmoid(model.logits(normalize_batch(images, device))).float().cpu())
        truth.append(labels)
    return torch.cat(scores).numpy(), torch.cat(truth).numpy()


def _validation_loss(scores: np.ndarray, truth: np.ndarray) -> float:
    eps = 1e-7
    p = np.clip(scores, eps, 1 - eps)
    return float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))


def train(
    model: CheXNet,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    epochs: int,
    lr: float,
    device: torch.device,
) -> History:
    """Train with the seed's recipe (Adam, lr, epochs, BCE); validate after each epoch."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.BCEWithLogitsLoss()
    history = History()
    for epoch in range(1, epochs + 1):
        model.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", unit="batch")
        for batch, (images, labels) in enumerate(bar, start=1):
            labels = labels.to(device, non_blocking=True)
            loss = criterion(model.logits(normalize_batch(images, device)), labels)
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, batch {batch}; stopping")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_seconds = time.perf_counter() - started
        history.images_seen += count
        history.train_seconds += train_seconds
        scores, truth = predict(model, val_loader, device, desc="validate")
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(count, 1),
            val_loss=_validation_loss(scores, truth),
            val_mean_auroc=mean_auroc(per_class_auroc(truth, scores)),
            seconds=time.perf_counter() - started,
        )
        history.epochs.append(record)
        auroc = "n/a" if record.val_mean_auroc is None else f"{record.val_mean_auroc:.4f}"
        log.info(
            "epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUROC %s (%.0f s)",
            epoch,
            epochs,
            record.train_loss,
            record.val_loss,
            auroc,
            record.seconds,
        )
    return history
