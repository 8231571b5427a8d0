"""Clinical-study evaluation: operating thresholds chosen on validation, per-class operating points and
calibration (test-time augmentation is :func:`chexnet.engine.inference.tta_views`).

Thresholds are chosen from **validation** predictions only and saved, so the test split is touched
once, to measure; :func:`choose_thresholds` never sees test labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from chexnet.config.evaluate import THRESHOLD_METHODS, EvaluateParams
from chexnet.core.errors import ChexnetError
from chexnet.evaluation import bootstrap, classification, subgroups
from chexnet.evaluation.classification import known, undefined_reason


def choose_thresholds(
    val_truth: np.ndarray, val_scores: np.ndarray, labels: Sequence[str], method: str = "youden"
) -> tuple[dict[str, float], dict[str, str]]:
    """One threshold per class from validation predictions.

    ``youden``: maximise sensitivity + specificity − 1 on the ROC curve; ``max_f1``: maximise F1 on
    the precision-recall curve. A class with no positives or no negatives in validation keeps 0.5
    (the seed's) and the reason is returned in the second dict. Masked entries take no part.
    """
    if method not in THRESHOLD_METHODS:
        raise ChexnetError(f"evaluate.threshold_method must be one of {THRESHOLD_METHODS}, got {method!r}")
    thresholds: dict[str, float] = {}
    fallbacks: dict[str, str] = {}
    for j, label in enumerate(labels):
        reason = undefined_reason(val_truth[:, j])
        if reason:
            thresholds[label], fallbacks[label] = 0.5, f"{reason} (validation): the seed's 0.5 is used"
            continue
        ok = known(val_truth[:, j])
        truth, scores = val_truth[ok, j], val_scores[ok, j]
        if method == "youden":
            fpr, tpr, cuts = roc_curve(truth, scores)
            best = int(np.argmax(tpr - fpr))
        else:
            precision, recall, cuts = precision_recall_curve(truth, scores)
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            best = int(np.argmax(f1))
        thresholds[label] = float(min(cuts[best], 1.0))  # roc_curve's first cut is +inf
    return thresholds, fallbacks


# A threshold chosen from fewer validation images than this, with the finding or without it, is set by
# one or two images' scores (the optimum of Youden's J or F1 jumps from one image to the next): said in
# thresholds.json, the report and the card, not hidden.
MIN_THRESHOLD_IMAGES = 10


def threshold_support(val_truth: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """How many validation images each threshold was chosen from, and which rest on too few."""
    positives = {label: int((val_truth[:, j] == 1).sum()) for j, label in enumerate(labels)}
    negatives = {label: int((val_truth[:, j] == 0).sum()) for j, label in enumerate(labels)}
    few = {
        label: f"chosen from {positives[label]} validation image(s) with it and {negatives[label]} without "
        f"(fewer than {MIN_THRESHOLD_IMAGES}): it may move a long way with one more image"
        for label in labels
        if min(positives[label], negatives[label]) < MIN_THRESHOLD_IMAGES
    }
    return {"images": len(val_truth), "positives": positives, "negatives": negatives, "few_images": few}


def validation_operating_points(
    val_truth: np.ndarray, val_scores: np.ndarray, labels: Sequence[str], method: str
) -> dict[str, Any]:
    """Every operating point chosen on validation, as ``models/thresholds.json`` holds them: one threshold
    per finding (:func:`choose_thresholds`), with the validation images each was chosen from. There is
    no separate "no finding" cut: an image is "no finding" when no output clears its own threshold
    (:func:`chexnet.evaluation.subgroups.called_no_finding`), in predict, the service and the reports."""
    thresholds, fallbacks = choose_thresholds(val_truth, val_scores, labels, method)
    record = thresholds_record(labels, method, thresholds, fallbacks)
    return record | {"validation": threshold_support(val_truth, labels)}


def operating_points(
    truth: np.ndarray, scores: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]
) -> dict[str, dict]:
    """Sensitivity, specificity, PPV, F1 and the 2×2 counts per class at the given thresholds."""
    out = {}
    for j, label in enumerate(labels):
        ok = known(truth[:, j])
        predicted = scores[ok, j] >= thresholds[label]
        actual = truth[ok, j].astype(bool)
        tp, fp = int((predicted & actual).sum()), int((predicted & ~actual).sum())
        fn, tn = int((~predicted & actual).sum()), int((~predicted & ~actual).sum())

        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        out[label] = {
            "threshold": thresholds[label],
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }
    return out


def binarize_at(scores: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]) -> np.ndarray:
    return (scores >= np.array([thresholds[label] for label in labels])[None, :]).astype(np.uint8)


def reliability(
    truth: np.ndarray, scores: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width probability bins, and the diagram's points.

    ECE = Σ_b (n_b / n) · |observed frequency_b − mean predicted probability_b|, over unmasked entries.
    """
    if bins < 1:
        raise ChexnetError(f"evaluate.calibration_bins must be 1 or more, got {bins}")
    truth, scores = np.asarray(truth, float).ravel(), np.asarray(scores, float).ravel()
    ok = known(truth)
    truth, scores = truth[ok], scores[ok]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    ece, points = 0.0, []
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        predicted, observed = float(scores[inside].mean()), float(truth[inside].mean())
        ece += inside.mean() * abs(observed - predicted)
        points.append({"bin": b, "predicted": predicted, "observed": observed, "count": int(inside.sum())})
    return float(ece), points


def thresholds_record(
    labels: Sequence[str], method: str, thresholds: dict[str, float], fallbacks: dict[str, str]
) -> dict[str, Any]:
    """``models/thresholds.json``: what predict applies, with the label list it belongs to."""
    return {
        "labels": list(labels),
        "method": method,
        "chosen_on": "val",
        "thresholds": thresholds,
        "fallbacks": fallbacks,
        "no_finding": "no output at or above its threshold",
    }


# Below these, an interval is noise, not evidence: the bootstrap resamples patients, so with a handful
# of them (or of patients with the finding) every replicate looks alike and the "95% CI" is narrow or
# even zero-width. The thresholds follow common reporting practice for diagnostic-accuracy studies
# (at least ~10 units to resample; a handful of positive cases gives no stable sensitivity).
MIN_CI_PATIENTS = 10  # test patients for any interval
MIN_CI_POSITIVE_PATIENTS = 5  # test patients with the finding, for its interval


def trust_flags(
    truth: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    split_positives: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Which figures cannot be trusted, and why: said in metrics, reports and the card, never silent.

    Per finding: fewer than :data:`MIN_CI_POSITIVE_PATIENTS` test patients with it (its interval is
    noise), or no positives in the training split (the model never saw it) or the validation split (its
    threshold is a fallback and its kept epoch ignored it). Overall: fewer than :data:`MIN_CI_PATIENTS`
    test patients (no interval can be trusted).
    """
    names = list(labels)
    test_patients = len(np.unique(patients))
    overall = []
    if test_patients < MIN_CI_PATIENTS:
        overall.append(
            f"only {test_patients} test patient(s): fewer than {MIN_CI_PATIENTS}, so no bootstrap interval "
            "can be trusted (a patient resample of so few is nearly always alike)"
        )
    per_finding: dict[str, list[str]] = {}
    for j, label in enumerate(names):
        reasons = []
        positive = truth[:, j] == 1
        with_finding = len(np.unique(patients[positive])) if positive.any() else 0
        if with_finding < MIN_CI_POSITIVE_PATIENTS:
            reasons.append(
                f"{with_finding} test patient(s) with it (< {MIN_CI_POSITIVE_PATIENTS}): interval unreliable"
            )
        for split in ("train", "val"):
            if split_positives is not None and split_positives.get(split, {}).get(label, 1) == 0:
                reasons.append(f"no positives in the {split} split")
        if reasons:
            per_finding[label] = reasons
    return {
        "min_patients": MIN_CI_PATIENTS,
        "min_positive_patients": MIN_CI_POSITIVE_PATIENTS,
        "overall": overall,
        "findings": per_finding,
    }


@dataclass
class TestEvaluation:
    """Everything the evaluate stage measures on the test split, ready to be written."""

    labels: list[str]
    summary: dict[str, Any]  # reports/evaluate.json (its headline part: metrics/evaluate.json)
    classification_reports: dict[str, Any]  # scikit-learn's, at the chosen thresholds and at 0.5
    report_text: str  # both reports as text, each under its heading
    at_thresholds: np.ndarray  # 0/1 predictions at the chosen thresholds
    operating_points: dict[str, dict]
    calibration_bins: list[dict[str, float]]  # all findings pooled
    calibration_bins_per_class: dict[str, list[dict[str, float]]]


# long: most of it is the literal of reports/evaluate.json, kept in one piece so that it reads like the
# file it writes (longer than our usual 60 lines on purpose).
def evaluate_test(
    truth: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    labels: Sequence[str],
    thresholds: dict[str, float],
    fallbacks: dict[str, str],
    cfg: EvaluateParams,
    seed: int,
    split_positives: dict[str, dict[str, int]] | None = None,
    groups: dict[str, np.ndarray] | None = None,
    normal: np.ndarray | None = None,
    few_validation_images: dict[str, str] | None = None,
) -> TestEvaluation:
    """The test split measured like a clinical study: AUROC and AP with patient-bootstrap intervals,
    the validation thresholds and the seed's 0.5 applied, and calibration; with what cannot be trusted
    flagged (``split_positives``: positives per finding of each split, from the split stage's report),
    and results by subgroup when ``groups`` gives each test image's group per attribute. ``normal``: each
    image called "no finding" from all the model's outputs, when fewer are scored here (an external set);
    by default from ``scores``. ``few_validation_images``: the thresholds chosen from too few validation
    images (:func:`threshold_support`), said beside them."""
    names = list(labels)
    intervals = bootstrap.bootstrap_metrics(
        truth, scores, patients, names, resamples=cfg.bootstrap_resamples, seed=seed, level=cfg.ci_level
    )
    at_chosen = binarize_at(scores, thresholds, names)
    at_seed = (scores >= cfg.threshold).astype(np.uint8)
    points = operating_points(truth, scores, thresholds, names)
    ece, overall_bins = reliability(truth, scores, cfg.calibration_bins)
    per_class = {
        label: reliability(truth[:, j], scores[:, j], cfg.calibration_bins) for j, label in enumerate(names)
    }
    chosen_report, chosen_text = classification.report(truth, at_chosen, names)
    seed_report, seed_text = classification.report(truth, at_seed, names)
    summary = {
        "split": "test",
        "findings": len(names),
        "images": len(truth),
        "patients": len(np.unique(patients)),
        "bootstrap": {
            "resamples": cfg.bootstrap_resamples,
            "unit": "patient",
            "seed": seed,
            "level": cfg.ci_level,
        },
        "auroc": {key: value.as_dict() for key, value in intervals["auroc"].items()},
        "average_precision": {key: value.as_dict() for key, value in intervals["average_precision"].items()},
        "thresholds": {
            "method": cfg.threshold_method,
            "chosen_on": "val",
            "fallbacks": fallbacks,
            "few_validation_images": few_validation_images or {},
        },
        "at_thresholds": {
            "micro_confusion": classification.micro_confusion(truth, at_chosen),
            "micro_f1": chosen_report["micro avg"]["f1-score"],
            "macro_f1": chosen_report["macro avg"]["f1-score"],
            "per_class": points,
        },
        "at_0.5": {
            "threshold": cfg.threshold,
            "micro_confusion": classification.micro_confusion(truth, at_seed),
            "micro_f1": seed_report["micro avg"]["f1-score"],
            "macro_f1": seed_report["macro avg"]["f1-score"],
        },
        "calibration": {
            "ece": ece,
            "bins": cfg.calibration_bins,
            "ece_per_class": {label: v[0] for label, v in per_class.items()},
        },
        "tta": cfg.tta,
        "caution": trust_flags(truth, patients, names, split_positives),
    }
    if groups:  # results by subgroup: docs/evaluation.md
        summary["subgroups"] = subgroups.subgroup_results(
            truth, scores, patients, groups, names, thresholds, normal=normal,
            reference=cfg.subgroup_reference, resamples=cfg.bootstrap_resamples, seed=seed,
            level=cfg.ci_level, min_patients=cfg.subgroup_min_patients,
            min_positive_patients=MIN_CI_POSITIVE_PATIENTS,
        )  # fmt: skip
    return TestEvaluation(
        labels=names,
        summary=summary,
        classification_reports={"validation_thresholds": chosen_report, "threshold_0.5": seed_report},
        report_text=(
            f"test split, thresholds chosen on validation ({cfg.threshold_method})\n\n{chosen_text}\n\n"
            f"test split, threshold {cfg.threshold:g} (the seed's)\n\n{seed_text}"
        ),
        at_thresholds=at_chosen,
        operating_points=points,
        calibration_bins=overall_bins,
        calibration_bins_per_class={label: v[1] for label, v in per_class.items()},
    )
