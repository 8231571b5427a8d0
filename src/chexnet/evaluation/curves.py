"""The curve tables ``dvc plots`` draws (``plots/roc.csv``, ``plots/pr.csv``, ``plots/calibration.csv`` and
an external set's own): one long-format CSV a curve kind, the shape the project's DVC template
``by_finding`` colours by finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core import io
from chexnet.evaluation import classification


def curves_frame(curves: dict[str, dict[str, list[float]]], columns: list[str]) -> pd.DataFrame:
    """Per-finding curves as one long table: ``finding``, ``point`` (the order to draw a curve's points
    in), then ``columns``; the shape the project's DVC template ``by_finding`` colours by finding."""
    parts = [
        pd.DataFrame({"finding": label, "point": range(len(points[columns[0]])), **points})
        for label, points in curves.items()
    ]
    header = ["finding", "point", *columns]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=header)
    return frame[header]


def write_curves(
    truth: np.ndarray, scores: np.ndarray, labels: list[str], calibration_bins: list, *,
    roc: Path, pr: Path, calibration: Path,
) -> None:  # fmt: skip
    """The curve tables ``dvc plots`` draws: ROC and PR one long-format file each (one line per finding,
    for any label list) and the pooled reliability bins."""
    roc_points, pr_points = (
        classification.roc_points(truth, scores, labels),
        classification.pr_points(truth, scores, labels),
    )
    io.write_csv(roc, curves_frame(roc_points, ["fpr", "tpr", "threshold"]))
    io.write_csv(pr, curves_frame(pr_points, ["recall", "precision", "threshold"]))
    bins = pd.DataFrame(calibration_bins, columns=["bin", "predicted", "observed", "count"])
    io.write_csv(calibration, bins)
