"""Feeding the prepared cache to the model: a Dataset over its rows and on-device normalisation."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from chexnet.core.labels import LabelList
from chexnet.data.cache import IMAGES_FILE, CacheError, label_matrix
from chexnet.data.input_spec import IMAGENET_INPUT, IMAGENET_MEAN, IMAGENET_STD, InputSpec

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CachedImages", "normalize_batch", "split_dataset"]


class CachedImages(Dataset):
    """Rows of the prepared cache as ``(uint8 1×S×S tensor, float K-vector)``, NaN where a label is masked.

    The memory map is opened lazily in each DataLoader worker (a mapped file does not pickle well and
    each process should map it itself). Normalisation happens on the device, batched, in
    :func:`normalize_batch`, not per sample in Python.
    """

    def __init__(self, prepared_dir: str | Path, rows: np.ndarray, labels: np.ndarray):
        self.path = Path(prepared_dir) / IMAGES_FILE
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.float32)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        image = torch.from_numpy(np.array(self._images[self.rows[i]]))
        return image.unsqueeze(0), self.labels[i]


@functools.lru_cache(maxsize=8)
def _affine(device: torch.device, spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale`` and ``shift`` with ``x = gray * scale + shift``, kept on ``device``.

    Cached per device and rule: building them each batch would copy from pageable host memory, which
    makes the CPU wait for the GPU every batch and stops it from queuing work ahead.
    """
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    std = torch.tensor(spec.std, dtype=torch.float32)
    scale, shift = 1.0 / (spec.scale * std), -mean / std
    shape = (1, spec.channels, 1, 1)
    return scale.view(shape).to(device), shift.view(shape).to(device)


def normalize_batch(
    images: torch.Tensor,
    device: torch.device | str,
    spec: InputSpec = IMAGENET_INPUT,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """Gray ``B×1×S×S`` (uint8, or float in the same units) → the network's input on ``device``.

    For the seed's rule (:data:`IMAGENET_INPUT`) gray is repeated to three channels, which is exactly
    what the seed's ``convert("RGB")`` does: ``(gray / 255 - mean_c) / std_c``; a one-channel rule
    (torchxrayvision's) keeps one. One fused multiply-add per pixel, on the device.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    scale, shift = _affine(device, spec)
    gray = images.to(device, non_blocking=True)
    out = torch.empty(
        (gray.shape[0], spec.channels, *gray.shape[2:]),
        device=device,
        memory_format=torch.channels_last if channels_last else torch.contiguous_format,
    )
    return torch.addcmul(shift, gray.float(), scale, out=out)


def split_dataset(
    prepared_dir: str | Path, split: pd.DataFrame, name: str, labels: LabelList
) -> CachedImages:
    """The rows of one split (``train``/``val``/``test``) of ``split.parquet`` as a dataset."""
    part = split[split["split"] == name]
    if part.empty:
        raise CacheError(f"split {name!r} is empty: use more images or change split fractions in params.yaml")
    return CachedImages(prepared_dir, part["row"].to_numpy(), label_matrix(part, labels))
