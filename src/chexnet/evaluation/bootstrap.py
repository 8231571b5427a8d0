"""Patient-level bootstrap confidence intervals for AUROC and average precision.

A patient's images are correlated (same anatomy, follow-ups of one disease course), so resampling
images would make intervals too narrow. Each replicate draws patients with replacement; every image
then counts as many times as its patient was drawn. That is a weighting of the original images, so
each replicate's AUROC and AP are computed exactly, vectorised over replicates, from one sort of the
scores (ties handled as scikit-learn does: half credit in AUROC, one step per distinct score in AP).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chexnet.evaluation.classification import known, undefined_reason


@dataclass(frozen=True)
class Interval:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    undefined: str | None = None  # why there is no value (no positives / no negatives in the split)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}
        if self.undefined:
            out["undefined"] = self.undefined
        return out


def clopper_pearson(events: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of ``events`` in ``trials`` (Clopper & Pearson, Biometrika 1934;
    beta quantiles as in Brown, Cai & DasGupta, Statistical Science 2001, eq. 5). It never collapses to a
    point: 0 of 69 gives 0 to 0.052, where a bootstrap of no events says "0–0". It counts each trial as
    independent, so for images of the same patient it is, if anything, too narrow: said in the docs."""
    from scipy.stats import beta  # imported on use: most callers never need scipy

    alpha = 1 - level
    low = 0.0 if events == 0 else float(beta.ppf(alpha / 2, events, trials - events + 1))
    high = 1.0 if events == trials else float(beta.ppf(1 - alpha / 2, events + 1, trials - events))
    return low, high


def patient_draws(patients: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each patient is drawn in each replicate (``resamples × patients``), and each image's patient.

    An image's weight in a replicate is its patient's count: ``draws[:, patient_of_image]``.
    """
    _, patient_of_image = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    n_patients = int(patient_of_image.max()) + 1
    uniform = np.full(n_patients, 1 / n_patients)
    draws = np.random.default_rng(seed).multinomial(n_patients, uniform, size=resamples)
    return draws, patient_of_image


def weighted_auroc_ap(
    truth: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of one binary problem under each row of ``weights`` (R × n).

    Rows whose sample has no positive or no negative weight give NaN (the replicate is left out).
    """
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], truth[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of equal scores, highest first
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # AUROC: each positive beats the negatives scored lower, half of those tied with it.
        neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
        auroc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        # AP: precision at each distinct score, weighted by the recall it adds.
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos * precision).sum(axis=1) / total_pos
    bad = (total_pos == 0) | (total_neg == 0)
    auroc[bad], ap[bad] = np.nan, np.nan
    return auroc, ap


def percentile_interval(point: float, replicates: np.ndarray, level: float) -> Interval:
    """``point`` with the ``level`` percentile interval of its finite replicates (replicates that drew
    no positive are NaN and left out); no interval without any, no value for a non-finite point. The
    one percentile rule of the evaluate report, the subgroups and ``chexnet compare``."""
    if not np.isfinite(point):
        return Interval(None, None, None)
    valid = replicates[np.isfinite(replicates)]
    if not len(valid):
        return Interval(float(point), None, None)
    low, high = np.percentile(valid, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(point), float(low), float(high))


# Longer than our usual 60 lines, on purpose: one pass over the replicates computes every class and the
# micro pool together, a chunk of replicates × images at a time; split up, each part would redo the draws.
def bootstrap_metrics(
    truth: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int = 100,
) -> dict[str, dict[str, Interval]]:
    """Per-class, macro and micro AUROC and AP with percentile intervals over patient resamples.

    Returns ``{"auroc": {label | "macro" | "micro": Interval}, "average_precision": {...}}``. A class
    without positives or negatives in the split is undefined (value None, with the reason) and left
    out of the macro mean; so is a replicate that happens to draw none. Masked (NaN) truth entries are
    left out of their class and of the micro pool.
    """
    labels = list(labels)
    n, k = truth.shape
    result: dict[str, dict[str, Interval]] = {"auroc": {}, "average_precision": {}}
    identity = np.ones((1, n))
    per_class_points, per_class_reps = {}, {}
    for metric in result:
        per_class_reps[metric] = np.full((resamples, k), np.nan)
    mask = known(truth)
    for j, label in enumerate(labels):
        reason = undefined_reason(truth[:, j])
        if reason:
            for metric in result:
                result[metric][label] = Interval(None, None, None, reason)
            continue
        ok = mask[:, j]
        point_auroc, point_ap = weighted_auroc_ap(truth[ok, j], scores[ok, j], identity[:, ok])
        per_class_points[label] = (point_auroc[0], point_ap[0])
    defined = [j for j, label in enumerate(labels) if label in per_class_points]
    micro_known = mask[:, defined].ravel()
    micro_truth = truth[:, defined].ravel()[micro_known]
    micro_scores = scores[:, defined].ravel()[micro_known]
    micro_reps = {metric: np.full(resamples, np.nan) for metric in result}
    draws, patient_of_image = patient_draws(patients, resamples, seed)
    for start in range(0, resamples, chunk):  # chunks keep the replicate × image matrix small
        weights = draws[start : start + chunk][:, patient_of_image].astype(np.float64)
        for j in defined:
            ok = mask[:, j]
            auroc, ap = weighted_auroc_ap(truth[ok, j], scores[ok, j], weights[:, ok])
            per_class_reps["auroc"][start : start + len(weights), j] = auroc
            per_class_reps["average_precision"][start : start + len(weights), j] = ap
        if defined:
            auroc, ap = weighted_auroc_ap(
                micro_truth, micro_scores, np.repeat(weights, len(defined), axis=1)[:, micro_known]
            )
            micro_reps["auroc"][start : start + len(weights)] = auroc
            micro_reps["average_precision"][start : start + len(weights)] = ap
    _fill_intervals(result, labels, defined, per_class_points, per_class_reps, micro_reps,
                    (micro_truth, micro_scores), level)  # fmt: skip
    return result


def _fill_intervals(
    result: dict[str, dict[str, Interval]], labels: list[str], defined: list[int],
    per_class_points: dict[str, tuple[float, float]], per_class_reps: dict[str, np.ndarray],
    micro_reps: dict[str, np.ndarray], micro_pool: tuple[np.ndarray, np.ndarray], level: float,
) -> None:  # fmt: skip
    """Per-class, macro and micro intervals from the point estimates and the replicates."""
    micro_truth, micro_scores = micro_pool
    for index, metric in enumerate(result):
        for j, label in enumerate(labels):
            if label in per_class_points:
                result[metric][label] = percentile_interval(
                    per_class_points[label][index], per_class_reps[metric][:, j], level
                )
        if defined:
            points = [per_class_points[labels[j]][index] for j in defined]
            with warnings.catch_warnings():  # a replicate with every class undefined: NaN, left out
                warnings.simplefilter("ignore", RuntimeWarning)
                macro_reps = np.nanmean(per_class_reps[metric][:, defined], axis=1)
            result[metric]["macro"] = percentile_interval(float(np.mean(points)), macro_reps, level)
            micro_point = weighted_auroc_ap(micro_truth, micro_scores, np.ones((1, len(micro_truth))))[index][
                0
            ]
            result[metric]["micro"] = percentile_interval(float(micro_point), micro_reps[metric], level)
        else:
            reason = "no finding has both positives and negatives in this split"
            result[metric]["macro"] = result[metric]["micro"] = Interval(None, None, None, reason)
