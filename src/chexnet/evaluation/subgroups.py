"""Results by subgroup (sex, age band, view, any attribute prepare carried): does the model work
equally well for everyone?

Per attribute and group: images, patients, macro and per-finding AUROC, pooled sensitivity and
specificity at the validation thresholds, and the **underdiagnosis rate**, each with a patient-bootstrap
interval; then each group's gap to the best group, with the interval of the gap.

Underdiagnosis follows Seyyed-Kalantari et al. (Nature Medicine 2021): the share of images that hold a
finding but are called "no finding". Their models had a "No Finding" output, thresholded at an operating
point chosen on validation; a CheXNet-style model has none, so here its stand-in is the **abnormality
score** ``max_j p_j / t_j`` (each output over its validation threshold: 1 means "at its threshold"),
and an image is called "no finding" when that score is below a cut chosen on the validation split by the
same method as the per-finding thresholds (:func:`chexnet.evaluation.report.choose_no_finding_cut`).
(The cut 1, "no output clears its threshold", calls almost no image normal when there are many
findings, each at a sensitive threshold: measured on the demo, 0.0 in every group.) An image holds a
finding when any of the model's findings is positive in its labels (masked labels are not positives).
The rate is per image, each image weighted as its patient is drawn.

The gap's interval comes from the same replicates as the groups' values (one draw of patients for all
groups), so it is the interval of the difference, not two intervals compared by eye. A group with fewer
than ``min_patients`` patients, or fewer than ``min_positive_patients`` with a finding, is too small: its
point values are given, its intervals and gaps are not (``too_small`` says why). The ``unknown`` group
(blank sex, missing age, ...) is reported but takes no part in the gaps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from chexnet.evaluation.bootstrap import Interval, patient_draws, weighted_auroc_ap
from chexnet.evaluation.classification import known

AGE_BANDS = (20, 40, 60, 80)  # edges: 0-20, 20-40, 40-60, 60-80, 80+ (years; a band holds its low edge)
UNKNOWN = "unknown"
HIGHER_IS_BETTER = {"auroc": True, "sensitivity": True, "specificity": True, "underdiagnosis": False}


def age_bands(ages: pd.Series, edges: Sequence[int] = AGE_BANDS) -> np.ndarray:
    """Years → band names (``"0-20"``, ..., ``"80+"``); missing → ``unknown``."""
    edges = list(edges)
    names = [f"{lo}-{hi}" for lo, hi in zip([0, *edges[:-1]], edges, strict=True)] + [f"{edges[-1]}+"]
    values = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=float)
    which = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.where(np.isnan(values), UNKNOWN, np.asarray(names, dtype=object)[np.minimum(which, len(edges))])


def attribute_groups(
    groups: pd.DataFrame, rows: Sequence[int], edges: Sequence[int] = AGE_BANDS
) -> dict[str, np.ndarray]:
    """Each attribute of the cache's ``groups.parquet`` as group names of the cache ``rows`` predicted."""
    groups = groups.set_index("row").loc[list(rows)]
    out = {}
    for attribute in groups.columns:
        column = groups[attribute]
        out[attribute] = age_bands(column, edges) if attribute == "age" else column.astype(str).to_numpy()
    return out


def abnormality(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Each image's stand-in for a "No Finding" output: its highest probability over its threshold."""
    return (scores / np.maximum(cuts[None, :], 1e-12)).max(axis=1)


def holds_a_finding(truth: np.ndarray) -> np.ndarray:
    return (truth == 1).any(axis=1)


def _image_counts(
    truth: np.ndarray,
    scores: np.ndarray,
    cuts: np.ndarray,
    no_finding_cut: float,
    abnormal: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Per image: positives hit and held, negatives kept and held, holds-a-finding, called-no-finding."""
    positive, negative = truth == 1, truth == 0  # NaN (masked) is neither
    predicted = scores >= cuts[None, :]
    score = abnormality(scores, cuts) if abnormal is None else abnormal
    return {
        "tp": (positive & predicted).sum(1), "pos": positive.sum(1),
        "tn": (negative & ~predicted).sum(1), "neg": negative.sum(1),
        "sick": positive.any(1), "called_normal": score < no_finding_cut,
    }  # fmt: skip


def _rates(weights: np.ndarray, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity, specificity (pooled over findings) and underdiagnosis under each row of weights."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": (weights @ c["tp"]) / (weights @ c["pos"]),
            "specificity": (weights @ c["tn"]) / (weights @ c["neg"]),
            "underdiagnosis": (weights @ (c["sick"] & c["called_normal"])) / (weights @ c["sick"]),
        }


def _aurocs(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per finding (columns) under each row of weights; NaN where a finding is undefined."""
    out = np.full((len(weights), truth.shape[1]), np.nan)
    mask = known(truth)
    for j in range(truth.shape[1]):
        ok = mask[:, j]
        if ok.any():
            out[:, j] = weighted_auroc_ap(truth[ok, j], scores[ok, j], weights[:, ok])[0]
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def _metrics(
    truth: np.ndarray, scores: np.ndarray, weights: np.ndarray, counts: dict
) -> dict[str, np.ndarray]:
    per_finding = _aurocs(truth, scores, weights)
    return {"auroc": _nanmean(per_finding), "auroc_per_finding": per_finding, **_rates(weights, counts)}


def _interval(point: float, replicates: np.ndarray | None, level: float) -> dict[str, object]:
    value = None if not np.isfinite(point) else float(point)
    if replicates is None or value is None or not np.isfinite(replicates).any():
        return Interval(value, None, None).as_dict()
    low, high = np.percentile(replicates[np.isfinite(replicates)], [50 * (1 - level), 50 * (1 + level)])
    return Interval(value, float(low), float(high)).as_dict()


# long: one pass of patient replicates serves every group, its metrics and the gaps between groups
# (the gaps need each replicate's values of all groups together).
def subgroup_results(
    truth: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    groups: Mapping[str, np.ndarray],
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    *,
    no_finding_cut: float = 1.0,
    abnormal: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_patients: int = 10,
    min_positive_patients: int = 5,
    chunk: int = 100,
) -> dict[str, object]:
    """``no_finding_cut``: an image is called "no finding" below it on its abnormality score (computed from
    ``scores`` unless ``abnormal`` gives it, e.g. from more outputs than are scored here).

    Per attribute: ``groups`` (name → figures), ``gaps`` (metric → best group and each group's gap to
    it) and ``largest_gap`` (metric → the furthest group, with the gap's interval)."""
    names = list(labels)
    cuts = np.array([thresholds[label] for label in names], dtype=float)
    counts = _image_counts(truth, scores, cuts, no_finding_cut, abnormal)
    patients = np.asarray(patients).astype(str)
    draws, patient_of_image = patient_draws(patients, resamples, seed)
    result: dict[str, object] = {}
    for attribute, values in groups.items():
        values = np.asarray(values).astype(str)
        members = {g: values == g for g in sorted(set(values))}
        small = {g: _too_small(patients[m], counts["sick"][m], min_patients, min_positive_patients)
                 for g, m in members.items()}  # fmt: skip
        points = {g: _metrics(truth, scores, m[None, :].astype(float), counts) for g, m in members.items()}
        sized = [g for g in members if not small[g]]
        reps = {
            g: {k: np.full((resamples, *v.shape[1:]), np.nan) for k, v in points[g].items()} for g in sized
        }
        for start in range(0, resamples, chunk):
            weights = draws[start : start + chunk][:, patient_of_image].astype(np.float64)
            for g in sized:
                for key, value in _metrics(truth, scores, weights * members[g], counts).items():
                    reps[g][key][start : start + len(weights)] = value
        table = {}
        for g, m in members.items():
            rep = reps.get(g)
            entry: dict[str, object] = {
                "images": int(m.sum()),
                "patients": len(np.unique(patients[m])),
                "images_with_finding": int(counts["sick"][m].sum()),
            }
            for key in HIGHER_IS_BETTER:
                entry[key] = _interval(points[g][key][0], None if rep is None else rep[key], level)
            entry["auroc_per_finding"] = {
                label: _interval(points[g]["auroc_per_finding"][0, j],
                                 None if rep is None else rep["auroc_per_finding"][:, j], level)
                for j, label in enumerate(names)
            }  # fmt: skip
            if small[g]:
                entry["too_small"] = small[g]
            table[g] = entry
        gaps = _gaps(points, reps, [g for g in sized if g != UNKNOWN], level)
        result[attribute] = {"groups": table, "gaps": gaps, "largest_gap": _largest(gaps)}
    return result


def _too_small(patients: np.ndarray, sick: np.ndarray, min_patients: int, min_positive: int) -> str | None:
    n, with_finding = len(np.unique(patients)), len(np.unique(patients[sick]))
    if n < min_patients:
        return f"{n} patient(s), fewer than {min_patients}: no interval"
    if with_finding < min_positive:
        return f"{with_finding} patient(s) with a finding, fewer than {min_positive}: no interval"
    return None


def _gaps(points: dict, reps: dict, eligible: list[str], level: float) -> dict[str, object]:
    """Per metric: the best group (on its point value) and every other group's gap to it."""
    gaps: dict[str, object] = {}
    if len(eligible) < 2:
        return gaps
    for key, higher in HIGHER_IS_BETTER.items():
        values = {g: float(points[g][key][0]) for g in eligible if np.isfinite(points[g][key][0])}
        if len(values) < 2:
            continue
        best = (max if higher else min)(values, key=values.get)
        gaps[key] = {
            "best": best,
            "gap_to_best": {
                g: _interval(values[g] - values[best], reps[g][key] - reps[best][key], level)
                for g in values if g != best
            },
        }  # fmt: skip
    return gaps


def _largest(gaps: dict[str, object]) -> dict[str, object]:
    """Per metric the group furthest from the best one, with the gap's interval (``metrics/``)."""
    out = {}
    for key, entry in gaps.items():
        worst = max(entry["gap_to_best"], key=lambda g: abs(entry["gap_to_best"][g]["value"] or 0.0))
        out[key] = {"best": entry["best"], "worst": worst, **entry["gap_to_best"][worst]}
    return out
