"""Results by subgroup (sex, age band, view, any attribute prepare carried): does the model work
equally well for everyone? Every definition, with its source, is in docs/evaluation.md ("Subgroups").

Per attribute and group: images, patients, macro and per-finding AUROC, pooled sensitivity and
specificity at the validation thresholds, and the **underdiagnosis rate**; then each group's gap to a
**reference group fixed in advance** (``evaluate.subgroup_reference``; by default the attribute's largest
group), and the largest of those gaps.

- **"No finding"** has one meaning everywhere: no output at or above its own threshold, which is what
  ``chexnet predict`` and the service answer "No Finding" for (:func:`called_no_finding`). The
  underdiagnosis rate (Seyyed-Kalantari et al., Nature Medicine 2021) is the share of images holding a
  finding that are called so. Their models had a "No Finding" output with its own operating point; a
  CheXNet-style model has none, and a second operating point would let an image be both "positive for a
  finding" and "no finding" at once.
- **Intervals that mean something.** A rate's interval is a patient-bootstrap percentile interval, or,
  when it rests on fewer than :data:`MIN_EVENTS` events or non-events, the exact Clopper–Pearson
  interval of its counts (a bootstrap of 0 events is "0–0"). A finding's AUROC in a group with fewer than
  ``min_positive_patients`` patients with it, or without it, has no interval (``too_few``). A group with
  fewer than ``min_patients`` patients, or ``min_positive_patients`` with a finding, is ``too_small``:
  point values and exact rate intervals, no bootstrap interval, no gap. ``unknown`` (blank sex, missing
  age) is reported and takes no part in gaps.
- **Comparable macro AUROCs**: a group's macro AUROC averages the findings every eligible group of its
  attribute can score (``auroc_findings`` lists them), never each group's own subset.
- **Gaps that account for how they were found**: the gaps of an attribute's groups to the reference
  get simultaneous intervals (max-|t| bootstrap, :func:`simultaneous_gaps`), so the largest of them,
  chosen after looking, keeps its coverage. ``tests/unit/evaluation/test_subgroups.py`` measures it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from chexnet.core.errors import ChexnetError
from chexnet.evaluation.bootstrap import (
    Interval,
    clopper_pearson,
    patient_draws,
    percentile_interval,
    weighted_auroc_ap,
)
from chexnet.evaluation.classification import known

AGE_BANDS = (20, 40, 60, 80)  # edges: 0-20, 20-40, 40-60, 60-80, 80+ (years; a band holds its low edge)
UNKNOWN = "unknown"
RATES = ("sensitivity", "specificity", "underdiagnosis")
HIGHER_IS_BETTER = {"auroc": True, "sensitivity": True, "specificity": True, "underdiagnosis": False}
MIN_EVENTS = 5  # below this many events (or non-events), a rate's interval is Clopper–Pearson's


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


def called_no_finding(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Per image: no output at or above its own threshold (predict's and the service's "No Finding")."""
    return ~(scores >= cuts[None, :]).any(axis=1)


def holds_a_finding(truth: np.ndarray) -> np.ndarray:
    return (truth == 1).any(axis=1)


def _image_counts(truth: np.ndarray, scores: np.ndarray, cuts: np.ndarray, normal: np.ndarray) -> dict:
    """Per image: each rate's events and trials (sensitivity and specificity pool the findings)."""
    positive, negative = truth == 1, truth == 0  # NaN (masked) is neither
    predicted = scores >= cuts[None, :]
    sick = positive.any(1)
    return {
        "sensitivity": ((positive & predicted).sum(1), positive.sum(1)),
        "specificity": ((negative & ~predicted).sum(1), negative.sum(1)),
        "underdiagnosis": ((sick & normal).astype(int), sick.astype(int)),
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


def _metrics(truth, scores, weights, counts, common: list[int]) -> dict[str, np.ndarray]:
    """Every figure under each row of weights. The macro AUROC averages the ``common`` findings only, and
    is NaN in a replicate where one of them is undefined (left out, never averaged over fewer)."""
    per_finding = _aurocs(truth, scores, weights)
    macro = per_finding[:, common].mean(axis=1) if common else np.full(len(weights), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = {key: (weights @ events) / (weights @ trials) for key, (events, trials) in counts.items()}
    return {"auroc": macro, "auroc_per_finding": per_finding, **rates}


def _percentile(point: float, replicates: np.ndarray, level: float, **extra) -> dict[str, object]:
    return percentile_interval(point, replicates, level).as_dict() | extra


def _rate(events: int, trials: int, replicates: np.ndarray | None, level: float) -> dict[str, object]:
    """A rate with its counts; exact interval when events or non-events are few, or no bootstrap ran."""
    counts = {"events": events, "of": trials}
    if trials == 0:
        return Interval(None, None, None, "no images it applies to").as_dict() | counts
    if replicates is None or min(events, trials - events) < MIN_EVENTS:
        low, high = clopper_pearson(events, trials, level)
        return Interval(events / trials, low, high).as_dict() | counts | {"interval": "clopper-pearson"}
    return _percentile(events / trials, replicates, level, **counts, interval="patient bootstrap")


def _patients_with(patients: np.ndarray, where: np.ndarray) -> int:
    return len(np.unique(patients[where])) if where.any() else 0


def _finding_too_few(truth_column: np.ndarray, patients: np.ndarray, minimum: int) -> str | None:
    with_it = _patients_with(patients, truth_column == 1)
    without = _patients_with(patients, truth_column == 0)
    if min(with_it, without) < minimum:
        return f"{with_it} patient(s) with it, {without} without (fewer than {minimum}): no interval"
    return None


def _too_small(patients: np.ndarray, sick: np.ndarray, min_patients: int, min_positive: int) -> str | None:
    n, with_finding = len(np.unique(patients)), _patients_with(patients, sick)
    if n < min_patients:
        return f"{n} patient(s), fewer than {min_patients}: no bootstrap CI, no gap"
    if with_finding < min_positive:
        return f"{with_finding} patient(s) with a finding, fewer than {min_positive}: no bootstrap CI, no gap"
    return None


def _reference(
    members: Mapping[str, np.ndarray], eligible: list[str], named: str | None, attribute: str
) -> str:
    if named is None:
        return max(eligible, key=lambda g: (int(members[g].sum()), g))  # the largest; ties by name
    if named not in members:
        raise ChexnetError(
            f"evaluate.subgroup_reference.{attribute}: {named!r} is not a group of {attribute} in the test "
            f"split (groups: {sorted(members)})"
        )
    if named not in eligible:
        raise ChexnetError(
            f"evaluate.subgroup_reference.{attribute}: {named!r} is unknown or too small to compare with in "
            f"the test split; name one of {sorted(eligible)}"
        )
    return named


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
    normal: np.ndarray | None = None,
    reference: Mapping[str, str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    min_patients: int = 10,
    min_positive_patients: int = 5,
    chunk: int = 100,
) -> dict[str, object]:
    """``normal``: each image called "no finding" (:func:`called_no_finding` over all the model's outputs,
    when fewer are scored here, as on an external set); by default from ``scores``. ``reference``:
    attribute → the group every other is compared with (default: the largest eligible group).

    Per attribute: ``groups`` (name → figures), ``auroc_findings``, ``reference``, ``gaps`` (metric →
    each group's gap to the reference, simultaneous intervals) and ``largest_gap`` (metric → the furthest
    group, with its gap)."""
    names = list(labels)
    cuts = np.array([thresholds[label] for label in names], dtype=float)
    normal = called_no_finding(scores, cuts) if normal is None else np.asarray(normal, dtype=bool)
    counts = _image_counts(truth, scores, cuts, normal)
    patients = np.asarray(patients).astype(str)
    draws, patient_of_image = patient_draws(patients, resamples, seed)
    result: dict[str, object] = {}
    for attribute, values in groups.items():
        values = np.asarray(values).astype(str)
        members = {g: values == g for g in sorted(set(values))}
        small = {g: _too_small(patients[m], holds_a_finding(truth[m]), min_patients, min_positive_patients)
                 for g, m in members.items()}  # fmt: skip
        sized = [g for g in members if not small[g]]
        eligible = [g for g in sized if g != UNKNOWN]
        too_few = {g: {j: _finding_too_few(truth[m, j], patients[m], min_positive_patients)
                       for j in range(len(names))} for g, m in members.items()}  # fmt: skip
        scorable = {g: {j for j, reason in too_few[g].items() if not reason} for g in members}
        common = sorted(set.intersection(*(scorable[g] for g in eligible))) if eligible else []
        points = {
            g: _metrics(truth, scores, m[None, :].astype(float), counts, common) for g, m in members.items()
        }
        reps = {
            g: {k: np.full((resamples, *v.shape[1:]), np.nan) for k, v in points[g].items()} for g in sized
        }
        for start in range(0, resamples, chunk):
            weights = draws[start : start + chunk][:, patient_of_image].astype(np.float64)
            for g in sized:
                for key, value in _metrics(truth, scores, weights * members[g], counts, common).items():
                    reps[g][key][start : start + len(weights)] = value
        table = {}
        for g, m in members.items():
            rep = reps.get(g)
            entry: dict[str, object] = {
                "images": int(m.sum()),
                "patients": len(np.unique(patients[m])),
                "images_with_finding": int(holds_a_finding(truth[m]).sum()),
                "auroc": _percentile(points[g]["auroc"][0], rep["auroc"] if rep else np.array([]), level)
                | (
                    {}
                    if common
                    else {
                        "undefined": "no finding every compared group can score (5+ patients "
                        "with it and without it in each)"
                    }
                ),
            }
            for key in RATES:
                events, trials = (int(c[m].sum()) for c in counts[key])
                entry[key] = _rate(events, trials, None if rep is None else rep[key], level)
            entry["auroc_per_finding"] = {}
            for j, label in enumerate(names):
                few = too_few[g][j]
                replicates = np.array([]) if rep is None or few else rep["auroc_per_finding"][:, j]
                entry["auroc_per_finding"][label] = _percentile(
                    points[g]["auroc_per_finding"][0, j],
                    replicates,
                    level,
                    **({"too_few": few} if few else {}),
                )
            if small[g]:
                entry["too_small"] = small[g]
            table[g] = entry
        out: dict[str, object] = {"groups": table, "auroc_findings": [names[j] for j in common]}
        if len(eligible) >= 2:
            ref = _reference(members, eligible, (reference or {}).get(attribute), attribute)
            gaps = _gaps(table, points, reps, eligible, ref, level)
            out |= {"reference": ref, "gaps": gaps, "largest_gap": _largest(gaps, ref)}
        else:
            out |= {"gaps": {}, "largest_gap": {}}
        result[attribute] = out
    return result


def simultaneous_gaps(
    points: Mapping[str, float], replicates: Mapping[str, np.ndarray], level: float
) -> dict[str, dict[str, object]]:
    """Intervals for several gaps at once, each ``point ± c·se``, where ``se`` is a gap's bootstrap
    standard error and ``c`` the ``level`` quantile of the replicates' largest studentised deviation
    ``max_g |gap*_g − gap_g| / se_g`` (max-|t|: Romano & Wolf 2005, JASA 100:94–108; Efron & Tibshirani
    1993, ch. 12). All of them cover together with probability ``level``, so the largest gap, picked
    after looking, keeps that coverage; one interval per gap read alone would not."""
    out: dict[str, dict[str, object]] = {}
    keys = [g for g in points if np.isfinite(points[g])]
    reps = np.column_stack([replicates[g] for g in keys]) if keys else np.empty((0, 0))
    reps = reps[np.isfinite(reps).all(axis=1)] if keys else reps
    se = reps.std(axis=0, ddof=1) if len(reps) > 1 else np.zeros(len(keys))
    usable = [i for i, g in enumerate(keys) if se[i] > 0]
    c = None
    if usable:
        deviation = np.abs(reps[:, usable] - np.array([points[keys[i]] for i in usable])) / se[usable]
        c = float(np.quantile(deviation.max(axis=1), level))
    for i, g in enumerate(keys):
        value = float(points[g])
        if c is None or se[i] == 0:
            out[g] = Interval(value, None, None).as_dict() | {"no_interval": "no variation across replicates"}
        else:
            out[g] = Interval(value, value - c * float(se[i]), value + c * float(se[i])).as_dict()
    return out


def _gaps(table: dict, points: dict, reps: dict, eligible: list[str], ref: str, level: float) -> dict:
    """Per metric: every eligible group's gap to the reference (group − reference), simultaneous over
    the groups. A rate resting on few events, in the group or the reference, gets no gap (said why)."""
    gaps: dict[str, object] = {}
    for key in HIGHER_IS_BETTER:
        few = {g for g in eligible if table[g][key].get("interval") == "clopper-pearson"}
        others = [g for g in eligible if g != ref]
        if key in RATES and ref in few:
            gaps[key] = {
                "not_compared": f"the reference {ref} has fewer than {MIN_EVENTS} events or non-events"
            }
            continue
        compared = [g for g in others if g not in few and np.isfinite(points[g][key][0])]
        if not np.isfinite(points[ref][key][0]) or not compared:
            continue
        intervals = simultaneous_gaps(
            {g: float(points[g][key][0] - points[ref][key][0]) for g in compared},
            {g: reps[g][key] - reps[ref][key] for g in compared},
            level,
        )
        entry: dict[str, object] = {
            "interval": f"simultaneous over {len(compared)} gap(s) (max-|t| bootstrap)",
            "to_reference": intervals,
        }
        skipped = sorted(set(others) - set(compared))
        if skipped:
            entry["not_compared"] = f"{skipped}: fewer than {MIN_EVENTS} events or non-events, or no value"
        gaps[key] = entry
    return gaps


def _largest(gaps: dict[str, object], ref: str) -> dict[str, object]:
    """Per metric the group furthest from the reference, with its (simultaneous) interval."""
    out = {}
    for key, entry in gaps.items():
        to_reference = entry.get("to_reference")
        if not to_reference:
            continue
        group = max(to_reference, key=lambda g: abs(to_reference[g]["value"] or 0.0))
        out[key] = {"group": group, "reference": ref, **to_reference[group], "interval": entry["interval"]}
    return out
