"""The explain stage's library: Grad-CAM++ overlays of the most confident test images per finding, and
localisation scores against expert boxes. It reads the prepared cache only, never image files (that is
:mod:`chexnet.deploy.predict`'s), so a change to decoding does not rerun the stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from chexnet.core.labels import file_safe
from chexnet.engine import inference
from chexnet.evaluation import figures
from chexnet.explain import boxes as box_scores
from chexnet.explain import cam
from chexnet.model.network import Network

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
    model: Network,
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
    """``(cache row, class index, finding, boxes on the size × size map, each box's reader)`` for every
    (image, finding) of ``predictions`` that has expert boxes; each box scaled from its own image's
    pixels. A box table that names images without their extension (VinDr-CXR's ``image_id``, RSNA's
    ``patientId``) meets the table's entries by file stem."""
    by_image = predictions.set_index("image")
    stems = {Path(str(entry)).stem: entry for entry in by_image.index}
    boxes = boxes.assign(image=[i if i in by_image.index else stems.get(str(i), i) for i in boxes["image"]])
    cases = []
    for (image_name, finding), group in boxes[boxes["image"].isin(by_image.index)].groupby(
        ["image", "finding"]
    ):
        record = by_image.loc[image_name]
        scaled = [
            box_scores.scale_box(b.x, b.y, b.w, b.h, int(record["width"]), int(record["height"]), size)
            for b in group.itertuples()
        ]
        readers = list(group["reader"]) if "reader" in group else [""] * len(scaled)
        cases.append((int(record["row"]), labels.index(finding), finding, scaled, readers))
    return cases


def localisation(
    model: Network,
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
    groups: pd.DataFrame | None = None,
) -> dict[str, object]:
    """Pointing game and IoBB > 0.5 for every (image, finding) with an expert box in ``predictions``
    (per subgroup too, when ``groups``, the cache's groups.parquet, is given).

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
            [c for _, c, *_ in chunk],
            target_layer=target_layer,
            device=device,
            precision=precision,
        )
        for heat, (row, _, finding, scaled, readers) in zip(heats, chunk, strict=True):
            records.append(box_scores.score_case(heat, finding, scaled, readers, fraction) | {"row": row})
    return box_scores.localisation_scores(records, labels, groups)
