"""PNG figures people would rather look at than read: the prediction grid, confusion and reliability
figures of the evaluate stage, and heat-map overlays. (The curve tables ``dvc plots`` draws are
:mod:`chexnet.evaluation.curves`: computing them needs scikit-learn, which the heat-map paths,
``chexnet predict``, ``serve`` and the explain stage, need not import: about 1 s of each start.)"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # stages run headless (CI, servers); never try to open a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from chexnet.core import io
from chexnet.core.labels import findings_string

# Titles hold untrusted text (file names, a table's finding names): "$" must stay a dollar sign, never
# start TeX math that matplotlib parses (and fails on: "scan$_{2.png" raised ValueError on save).
matplotlib.rcParams["text.parse_math"] = False


def _names(row: np.ndarray, labels: list[str]) -> str:
    """A label row as text; a masked entry shows as ``Finding?``."""
    return findings_string(row, labels, no_finding="none").replace("|", ", ")


def _grid(count: int, cols: int = 5) -> tuple[int, int]:
    """Rows and columns for ``count`` small panels (any number of findings)."""
    cols = max(1, min(cols, count))
    return max(1, math.ceil(count / cols)), cols


def prediction_grid(
    path: str | Path,
    images: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    labels: list[str],
    titles: list[str],
    rule: str,
) -> Path:
    """The seed's picture grid: each test image with its true and predicted (0/1) labels."""
    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, true_row, pred_row, title in zip(
        axes.ravel(), images, truth, predicted, titles, strict=False
    ):
        known = ~np.isnan(np.asarray(true_row, float))
        correct = np.array_equal(np.asarray(pred_row)[known] == 1, np.asarray(true_row)[known] == 1)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(
            f"{title}\ntrue: {_names(true_row, labels)}\npred: {_names(pred_row, labels)}",
            fontsize=7,
            color="darkgreen" if correct else "darkred",
        )
    figure.suptitle(f"Test images: true vs predicted labels, {rule}")
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


def confusion_grid(path: str | Path, points: dict[str, dict], title: str) -> Path:
    """Per-class 2×2 confusion matrices (rows: truth, columns: prediction) in one figure."""
    rows, cols = _grid(len(points))
    figure, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, label in zip(axes.ravel(), points, strict=False):
        p = points[label]
        matrix = np.array([[p["tn"], p["fp"]], [p["fn"], p["tp"]]])
        ax.axis("on")
        ax.imshow(matrix / max(matrix.sum(), 1), cmap="Blues", vmin=0, vmax=1)
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha="center", va="center", fontsize=10)
        ax.set_xticks([0, 1], ["pred −", "pred +"], fontsize=7)
        ax.set_yticks([0, 1], ["true −", "true +"], fontsize=7)
        ax.set_title(f"{label}\nthreshold {p['threshold']:.3f}", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    return io.save_figure(path, figure, dpi=80)


def reliability_diagram(
    path: str | Path,
    overall: list[dict[str, float]],
    per_class: dict[str, list[dict[str, float]]],
    ece: float,
) -> Path:
    """Observed frequency against mean predicted probability per bin: overall, then per class."""
    rows, cols = _grid(len(per_class) + 1)
    figure, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(per_class) + 1 :]:
        ax.axis("off")
    curves = [("all findings", overall, ece), *((label, points, None) for label, points in per_class.items())]
    for ax, (name, points, value) in zip(axes.ravel(), curves, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
        if points:
            ax.plot(
                [p["predicted"] for p in points], [p["observed"] for p in points], marker="o", markersize=3
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name if value is None else f"{name} (ECE {value:.3f})", fontsize=8)
        ax.tick_params(labelsize=6)
    figure.supxlabel("mean predicted probability")
    figure.supylabel("observed frequency")
    figure.suptitle("Reliability diagram (test split)")
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    return io.save_figure(path, figure, dpi=80)


def cam_grid(path: str | Path, tiles: list[tuple[np.ndarray, str]], title: str) -> Path:
    """Several heat-map overlays in a row (one finding's top-k images)."""
    figure, axes = plt.subplots(1, max(len(tiles), 1), figsize=(4 * max(len(tiles), 1), 4.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (blended, caption) in zip(axes.ravel(), tiles, strict=False):
        ax.imshow(blended)
        ax.set_title(caption, fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    return io.save_figure(path, figure, dpi=80)


def subgroup_figure(path: Path, by_attribute: dict[str, Any]) -> None:
    """One row per attribute: each group's underdiagnosis rate and macro AUROC with their 95% intervals
    (a group too small for an interval: its point, hollow); a note when there is no attribute."""
    if not by_attribute:
        fig = plt.figure(figsize=(6, 1))
        fig.text(0.5, 0.5, "no subgroup attribute in this data (docs/evaluation.md)", ha="center")
        io.write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
        return
    rows = len(by_attribute)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 2.6 * rows + 0.6), squeeze=False)
    for (attribute, entry), (left, right) in zip(by_attribute.items(), axes, strict=True):
        names = list(entry["groups"])
        for ax, key, title in ((left, "underdiagnosis", "underdiagnosis rate (lower is better)"),
                               (right, "auroc", "macro AUROC")):  # fmt: skip
            for y, name in enumerate(names):
                figure = entry["groups"][name][key]
                if figure["value"] is None:
                    continue
                filled = figure["ci_low"] is not None
                exact = figure.get("interval") == "clopper-pearson"  # few events: the exact interval
                colour = "tab:orange" if exact else "tab:blue"
                if filled:
                    ax.plot([figure["ci_low"], figure["ci_high"]], [y, y], color=colour, lw=2)
                ax.plot(figure["value"], y, "o", color=colour, mfc=colour if filled else "white")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels([f"{n} ({entry['groups'][n]['patients']} pts)" for n in names], fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_title(f"{attribute}: {title}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Test split by subgroup, 95% intervals: patient bootstrap (blue), exact Clopper–Pearson for "
                 "few events (orange), none (hollow)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def evaluation_figures(
    result: Any, test: pd.DataFrame, truth: np.ndarray, images: np.ndarray, shown: int, *,
    confusion: Path, reliability: Path, grid: Path, subgroups: Path,
) -> None:  # fmt: skip
    """The evaluate stage's PNGs from an :class:`chexnet.evaluation.report.TestEvaluation`: the ``confusion``
    grid and ``reliability`` diagram of the test split at the validation thresholds, and the picture
    ``grid`` of its first ``shown`` images (``images``: the prepared cache), and the ``subgroups``
    figure (a figure saying there are none when prepare carried no attribute)."""
    subgroup_figure(subgroups, result.summary.get("subgroups") or {})
    confusion_grid(confusion, result.operating_points, "Test split at thresholds chosen on validation")
    calibration = result.summary["calibration"]
    reliability_diagram(
        reliability, result.calibration_bins, result.calibration_bins_per_class, calibration["ece"]
    )
    shown = min(shown, len(test))
    prediction_grid(
        grid,
        np.stack([images[r] for r in test["row"][:shown]]),
        truth[:shown],
        result.at_thresholds[:shown],
        result.labels,
        list(test["image"][:shown]),
        f"thresholds chosen on validation ({result.summary['thresholds']['method']})",
    )
