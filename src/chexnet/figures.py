"""PNG figures people would rather look at than read: the prediction grid and heat-map overlays."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless (CI, servers); never try to open a window
import matplotlib.pyplot as plt
import numpy as np

from chexnet import io
from chexnet.labels import LABELS


def _names(row: np.ndarray) -> str:
    names = [label for label, flag in zip(LABELS, row, strict=True) if flag]
    return ", ".join(names) if names else "No Finding"


def prediction_grid(
    path: str | Path,
    images: np.ndarray,
    truth: np.ndarray,
    scores: np.ndarray,
    titles: list[str],
    threshold: float,
) -> Path:
    """The seed's picture grid: each test image with its true and predicted labels."""
    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, true_row, score_row, title in zip(
        axes.ravel(), images, truth, scores, titles, strict=False
    ):
        predicted = score_row >= threshold
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(
            f"{title}\ntrue: {_names(true_row)}\npred: {_names(predicted)}",
            fontsize=7,
            color="darkgreen" if np.array_equal(predicted, true_row.astype(bool)) else "darkred",
        )
    figure.suptitle(f"Test images: true vs predicted labels (threshold {threshold:g})")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return io.save_figure(path, figure, dpi=80)


def cam_figure(path: str | Path, image: np.ndarray, blended: np.ndarray, title: str) -> Path:
    """Image and its Grad-CAM++ overlay side by side."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 4.4))
    left.imshow(image, cmap="gray", vmin=0, vmax=255)
    left.set_title("input", fontsize=9)
    right.imshow(blended)
    right.set_title("Grad-CAM++", fontsize=9)
    for ax in (left, right):
        ax.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return io.save_figure(path, figure, dpi=80)
