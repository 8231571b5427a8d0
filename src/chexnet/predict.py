"""predict: read new chest X-rays (PNG, JPEG, DICOM), say what the model finds, optionally with heat maps.

Images are read in any pixel mode, batched through the model, and each finding is reported against its
validation-chosen threshold from the evaluate stage (``models/thresholds.json``). A file that cannot be
read is reported with its reason; the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from chexnet import cam
from chexnet.images import to_gray8
from chexnet.labels import LABELS

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


@dataclass
class Prediction:
    file: str
    probabilities: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    error: str | None = None
    heatmaps: list[str] = field(default_factory=list)


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for PNG, JPEG and DICOM files (sorted)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(item)
    return files


def _to_gray8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def read_dicom(path: Path) -> np.ndarray:
    """A DICOM radiograph as 8-bit grayscale, displayed as a radiologist would see it.

    Rescale slope/intercept (modality LUT), then the VOI LUT or window centre/width when the file has
    one, then MONOCHROME1 (white = low values) inverted, then the real range scaled to 0..255.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame file: its first frame
    if dataset.get("SamplesPerPixel", 1) != 1:
        return np.asarray(Image.fromarray(_to_gray8(pixels)).convert("L"))
    values = apply_modality_lut(pixels, dataset)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = apply_voi_lut(values, dataset)
    gray = _to_gray8(values)
    if dataset.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        gray = 255 - gray
    return gray


def read_image(path: Path, size: int) -> np.ndarray:
    """Any supported file → ``size × size`` uint8 grayscale (antialiased resize)."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        gray = read_dicom(path)
    else:
        with Image.open(path) as image:
            image.load()
            gray = to_gray8(image)
    if gray.shape != (size, size):
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    return gray


def _batches(
    files: list[Path], size: int, batch_size: int
) -> Iterator[tuple[list[Path], np.ndarray | None, list]]:
    """Decoded batches; unreadable files come back one by one with their error."""
    good: list[Path] = []
    pixels: list[np.ndarray] = []
    failures: list[tuple[Path, str]] = []
    for path in files:
        try:
            pixels.append(read_image(path, size))
            good.append(path)
        except Exception as error:  # any reader failure is reported, never fatal
            failures.append((path, f"{type(error).__name__}: {error}"))
        if len(good) == batch_size:
            yield good, np.stack(pixels), failures
            good, pixels, failures = [], [], []
    if good or failures:
        yield good, (np.stack(pixels) if pixels else None), failures


def predict_files(
    model: torch.nn.Module,
    files: list[Path],
    *,
    thresholds: dict[str, float],
    image_size: int = 224,
    device: torch.device,
    batch_size: int = 16,
    heatmaps: Path | None = None,
    target_layer: str = "features[-1]",
) -> list[Prediction]:
    """Probabilities and findings for every file, in order; heat maps of positive findings if asked."""
    cut = np.array([thresholds[label] for label in LABELS])
    results: dict[Path, Prediction] = {}
    with tqdm(total=len(files), desc="predict", unit="img") as bar:
        for good, pixels, failures in _batches(files, image_size, batch_size):
            for path, error in failures:
                log.error("%s: cannot be read: %s", path, error)
                results[path] = Prediction(file=str(path), error=error)
            if pixels is not None:
                probabilities = cam.predict_probabilities(model, pixels, device)
                for path, image, p in zip(good, pixels, probabilities, strict=True):
                    positive = [label for label, flag in zip(LABELS, p >= cut, strict=True) if flag]
                    result = Prediction(
                        file=str(path),
                        probabilities=dict(zip(LABELS, p.tolist(), strict=True)),
                        findings=positive,
                    )
                    if heatmaps is not None and positive:
                        result.heatmaps = _heatmaps(
                            model, image, path, positive, p, heatmaps, target_layer, device
                        )
                    results[path] = result
            bar.update(len(good) + len(failures))
    return [results[path] for path in files]


def _heatmaps(model, image, path, findings, probabilities, out_dir, target_layer, device) -> list[str]:
    from chexnet import figures

    indices = [LABELS.index(label) for label in findings]
    heats, _ = cam.grad_cam_pp_batch(
        model, np.repeat(image[None], len(indices), axis=0), indices, target_layer=target_layer, device=device
    )
    written = []
    for label, j, heat in zip(findings, indices, heats, strict=True):
        target = out_dir / f"{path.stem}_{label}.png"
        figures.cam_figure(
            target, image, cam.overlay(image, heat), f"{path.name} — {label}: p={probabilities[j]:.3f}"
        )
        written.append(str(target))
    return written
