"""Explaining predictions: Grad-CAM++ overlays of the most confident images per finding, localisation
scores against expert boxes, and the explanation of one arbitrary image file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from chexnet import boxes as box_scores
from chexnet import cam, figures, inference
from chexnet.images import load_gray
from chexnet.labels import file_safe
from chexnet.model import CheXNet

OVERLAY_COLUMNS = (
    "finding",
    "rank",
    "image",
    "probability",
    "ground_truth",
    "overlay",
)  # reports/explain.csv


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def top_k_overlays(
    model: CheXNet,
    images: np.ndarray,
    predictions: pd.DataFrame,
    labels: list[str],
    *,
    k: int,
    target_layer: str,
    device: torch.device,
    out_dir: Path,
    precision: inference.Precision = inference.FP32,
) -> list[dict[str, object]]:
    """For each finding present in ``predictions``, its ``k`` most probable images: one overlay PNG each
    (``<out_dir>/<Finding>/top<r>.png``) and a grid (``<out_dir>/<Finding>.png``). Returns their rows.

    ``labels`` are the model's findings in output order (unit ``i`` is ``labels[i]``)."""
    rows = []
    for index, label in enumerate(tqdm(labels, desc="top-k heat maps", unit="finding")):
        truth_column = predictions[label].astype("Float64")
        if truth_column.fillna(0).sum() == 0:
            continue  # the finding is not present (or only masked) in this split
        top = predictions.nlargest(k, f"p_{label}")
        pixels = np.stack([np.asarray(images[int(r)]) for r in top["row"]])
        heats, probabilities = cam.grad_cam_pp_batch(
            model, pixels, [index] * len(top), target_layer=target_layer, device=device, precision=precision
        )
        tiles = []
        for rank, (record, image, heat, p) in enumerate(
            zip(top.itertuples(), pixels, heats, probabilities, strict=True), 1
        ):
            value = truth_column.loc[record.Index]
            truth = "unknown (masked)" if pd.isna(value) else ("positive" if value == 1 else "negative")
            caption = f"{record.image}\np={p:.3f}, ground truth {truth}"
            blended = cam.overlay(image, heat)
            path = out_dir / file_safe(label) / f"top{rank}.png"
            figures.cam_figure(path, image, blended, f"{label}: {caption.replace(chr(10), ' — ')}")
            tiles.append((blended, caption))
            rows.append(
                {
                    "finding": label,
                    "rank": rank,
                    "image": record.image,
                    "probability": float(p),
                    "ground_truth": None if pd.isna(value) else bool(value == 1),
                    "overlay": str(path),
                }
            )
        figures.cam_grid(
            out_dir / f"{file_safe(label)}.png",
            tiles,
            f"{label}: top {len(tiles)} test images by probability",
        )
    return rows


def box_cases(
    predictions: pd.DataFrame, boxes: pd.DataFrame, size: int, labels: list[str]
) -> list[tuple[int, int, str, list[tuple[float, ...]]]]:
    """``(cache row, class index, finding, boxes on the size × size map)`` for every (image, finding)
    of ``predictions`` that has expert boxes; each box scaled from its own image's pixels."""
    by_image = predictions.set_index("image")
    cases = []
    for (image_name, finding), group in boxes[boxes["image"].isin(by_image.index)].groupby(
        ["image", "finding"]
    ):
        record = by_image.loc[image_name]
        scaled = [
            box_scores.scale_box(b.x, b.y, b.w, b.h, int(record["width"]), int(record["height"]), size)
            for b in group.itertuples()
        ]
        cases.append((int(record["row"]), labels.index(finding), finding, scaled))
    return cases


def localisation(
    model: CheXNet,
    images: np.ndarray,
    predictions: pd.DataFrame,
    boxes: pd.DataFrame,
    labels: list[str],
    *,
    target_layer: str,
    device: torch.device,
    fraction: float = 0.5,
    batch_size: int = 16,
    precision: inference.Precision = inference.FP32,
) -> dict[str, object]:
    """Pointing game and IoBB > 0.5 for every (image, finding) with an expert box in ``predictions``.

    Every such image is scored, whatever its probability: the heat map of the box's finding is asked
    where that finding is.
    """
    cases = box_cases(predictions, boxes, images.shape[-1], labels)
    records = []
    for chunk in tqdm(list(_batches(cases, batch_size)), desc="localisation", unit="batch"):
        pixels = np.stack([np.asarray(images[row]) for row, *_ in chunk])
        heats, _ = cam.grad_cam_pp_batch(
            model,
            pixels,
            [c for _, c, _, _ in chunk],
            target_layer=target_layer,
            device=device,
            precision=precision,
        )
        for heat, (_, _, finding, scaled) in zip(heats, chunk, strict=True):
            predicted = box_scores.predicted_box(heat, fraction)
            best = max((box_scores.iobb(predicted, box) for box in scaled), default=0.0) if predicted else 0.0
            records.append(
                {
                    "finding": finding,
                    "hit": box_scores.pointing_hit(heat, scaled),
                    "iobb_over_half": best > 0.5,
                }
            )
    return box_scores.localisation_scores(records, labels)


def explain_file(
    path: str | Path,
    model: CheXNet,
    labels: list[str],
    *,
    image_size: int,
    target_layer: str,
    device: torch.device,
    out_dir: str | Path,
    thresholds: dict[str, float] | None = None,
    findings: list[str] | None = None,
) -> list[dict[str, object]]:
    """Explain one image file (any format :func:`chexnet.images.load_gray` reads: PNG, JPEG, DICOM).

    Heat maps for ``findings`` if given, else for every finding at or above its threshold (0.5 where
    none is given), else for the single most probable finding. Writes ``<stem>_<Finding>.png`` overlays
    under ``out_dir`` and returns one row per finding explained.
    """
    image = load_gray(path, image_size)
    thresholds = thresholds or dict.fromkeys(labels, 0.5)
    with torch.no_grad():
        probabilities = inference.predict_images(model, image[None], device)[0]
    if findings is None:
        findings = [label for j, label in enumerate(labels) if probabilities[j] >= thresholds[label]]
        findings = findings or [labels[int(np.argmax(probabilities))]]
    overlays = write_overlays(
        model,
        image,
        Path(path),
        findings,
        probabilities,
        labels,
        out_dir=Path(out_dir),
        target_layer=target_layer,
        device=device,
    )
    return [
        {"finding": label, "probability": float(probabilities[labels.index(label)]), "overlay": overlay}
        for label, overlay in zip(findings, overlays, strict=True)
    ]


def write_overlays(
    model: CheXNet,
    image: np.ndarray,
    path: Path,
    findings: list[str],
    probabilities: np.ndarray,
    labels: list[str],
    *,
    out_dir: Path,
    target_layer: str,
    device: torch.device,
    stem: str | None = None,
) -> list[str]:
    """Grad-CAM++ overlays of one uint8 image for each finding, as ``<out_dir>/<stem>_<Finding>.png``."""
    indices = [labels.index(label) for label in findings]
    heats, _ = cam.grad_cam_pp_batch(
        model, np.repeat(image[None], len(indices), axis=0), indices, target_layer=target_layer, device=device
    )
    written = []
    for label, j, heat in zip(findings, indices, heats, strict=True):
        target = out_dir / f"{stem or path.stem}_{file_safe(label)}.png"
        title = f"{path.name} — {label}: p={probabilities[j]:.3f}"
        figures.cam_figure(target, image, cam.overlay(image, heat), title)
        written.append(str(target))
    return written
