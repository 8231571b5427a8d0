"""Is model B better than model A? Two models' predictions on the **same** test images compared as a
paired study (``chexnet compare``; docs/evaluation.md, "Comparing two models").

``dvc metrics diff`` shows two AUROCs, each with its own interval; overlapping intervals are not a test of
the difference (the two are computed on the same images, so their errors are correlated). Here, per
finding and for the macro mean:

- the AUROC difference B − A with a **paired patient-bootstrap** interval: each replicate draws patients
  once and scores both models on that draw, so the interval is the difference's (patients, not images,
  are the unit: their images are correlated);
- **DeLong's test** of the paired AUROCs (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), computed
  with Sun & Xu's midrank algorithm (IEEE Signal Processing Letters 2014). It treats images as
  independent; where patients have several images the bootstrap interval is the one to read;
- p-values adjusted for the number of findings tested by **Holm**'s step-down method (Scandinavian
  Journal of Statistics 1979), which controls the family-wise error without assuming independence;
- at each model's own validation thresholds, the decisions that changed: images called positive by one
  model and not the other, and how many of those changes B got right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from chexnet.evaluation.bootstrap import patient_draws, percentile_interval, weighted_auroc_ap
from chexnet.evaluation.classification import known, undefined_reason


def _midrank_components(truth: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and DeLong's structural components: per positive, the share of negatives it outscores
    (ties count half), and per negative, the share of positives that outscore it."""
    positive, negative = scores[truth == 1], scores[truth == 0]
    m, n = len(positive), len(negative)
    every = rankdata(np.concatenate([positive, negative]))  # midranks: ties get their mean rank
    v10 = (every[:m] - rankdata(positive)) / n
    v01 = 1.0 - (every[m:] - rankdata(negative)) / m
    return float(v10.mean()), v10, v01


def delong_paired(truth: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of AUROC(B) − AUROC(A) on the same images: the difference, its standard error, z and
    the two-sided p-value (p = 1 when both models rank the images identically: no variance, no evidence)."""
    auc_a, v10_a, v01_a = _midrank_components(truth, scores_a)
    auc_b, v10_b, v01_b = _midrank_components(truth, scores_b)
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    covariance = s10 / m + s01 / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = auc_b - auc_a
    if variance <= 1e-15:
        z, p = (0.0, 1.0) if abs(difference) < 1e-12 else (math.copysign(math.inf, difference), 0.0)
    else:
        z = difference / math.sqrt(variance)
        p = float(2 * norm.sf(abs(z)))
    return {"auroc_a": auc_a, "auroc_b": auc_b, "difference": difference,
            "se": math.sqrt(max(variance, 0.0)), "z": z, "p": p}  # fmt: skip


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m − k + 1), kept monotone
    and at most 1. A finding is significant at α when its adjusted p-value is below α."""
    order = sorted(p_values, key=p_values.get)
    adjusted, running = {}, 0.0
    for k, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p_values[name]))
        adjusted[name] = running
    return adjusted


def _decisions(truth: np.ndarray, called_a: np.ndarray, called_b: np.ndarray) -> dict[str, int]:
    changed = called_a != called_b
    right_b = changed & (called_b == (truth == 1))
    return {
        "changed": int(changed.sum()),
        "a_positive_b_negative": int((called_a & ~called_b).sum()),
        "a_negative_b_positive": int((~called_a & called_b).sum()),
        "b_right_where_a_wrong": int(right_b.sum()),
        "a_right_where_b_wrong": int((changed & ~right_b).sum()),
    }


def _percentile(point: float, replicates: np.ndarray, level: float) -> dict[str, object]:
    return percentile_interval(point, replicates, level).as_dict()


# long: one pass of paired replicates serves every finding and the macro mean (the macro difference
# needs each replicate's per-finding values of both models together).
def compare_models(
    truth: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    *,
    thresholds_a: Mapping[str, float] | None = None,
    thresholds_b: Mapping[str, float] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 100,
) -> dict[str, Any]:
    """Per finding and macro: both AUROCs, B − A with its paired patient-bootstrap interval, DeLong's
    p-value and its Holm adjustment; with both models' thresholds, the decisions that changed."""
    names = list(labels)
    mask = known(truth)
    defined = [j for j in range(len(names)) if not undefined_reason(truth[:, j])]
    per_finding: dict[str, Any] = {}
    for j, name in enumerate(names):
        if j not in defined:
            per_finding[name] = {"undefined": undefined_reason(truth[:, j])}
            continue
        ok = mask[:, j]
        per_finding[name] = delong_paired(truth[ok, j], scores_a[ok, j], scores_b[ok, j])
    adjusted = holm({names[j]: per_finding[names[j]]["p"] for j in defined})
    draws, patient_of_image = patient_draws(patients, resamples, seed)
    differences = np.full((resamples, len(names)), np.nan)
    for start in range(0, resamples, chunk):
        weights = draws[start : start + chunk][:, patient_of_image].astype(np.float64)
        for j in defined:
            ok = mask[:, j]
            a = weighted_auroc_ap(truth[ok, j], scores_a[ok, j], weights[:, ok])[0]
            b = weighted_auroc_ap(truth[ok, j], scores_b[ok, j], weights[:, ok])[0]
            differences[start : start + len(weights), j] = b - a
    for j in defined:
        entry = per_finding[names[j]]
        entry["p_holm"] = adjusted[names[j]]
        entry["difference_ci"] = _percentile(entry["difference"], differences[:, j], level)
        if thresholds_a is not None and thresholds_b is not None:
            ok = mask[:, j]
            entry["decisions"] = _decisions(truth[ok, j], scores_a[ok, j] >= thresholds_a[names[j]],
                                            scores_b[ok, j] >= thresholds_b[names[j]])  # fmt: skip
    macro: dict[str, Any] = {"findings": [names[j] for j in defined]}
    if defined:
        a_mean = float(np.mean([per_finding[names[j]]["auroc_a"] for j in defined]))
        b_mean = float(np.mean([per_finding[names[j]]["auroc_b"] for j in defined]))
        replicates = differences[:, defined].mean(axis=1)  # NaN where a finding drew no positive: left out
        macro |= {"auroc_a": a_mean, "auroc_b": b_mean, "difference": b_mean - a_mean,
                  "difference_ci": _percentile(b_mean - a_mean, replicates, level)}  # fmt: skip
    return {
        "images": len(truth),
        "patients": len(np.unique(np.asarray(patients).astype(str))),
        "bootstrap": {
            "resamples": resamples,
            "unit": "patient",
            "seed": seed,
            "level": level,
            "paired": True,
        },
        "adjustment": f"Holm over {len(defined)} finding(s)",
        "findings": per_finding,
        "macro": macro,
    }
