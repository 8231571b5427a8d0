"""Patient-level train/validation/test splits.

The seed splits images at random, so one patient's follow-up images land in both train and test and
the test score measures memorised anatomy, not generalisation. Here whole patients are assigned to one
split; :func:`check_no_patient_overlap` is asserted by the split stage every time it runs.

Output contract: ``split.parquet`` = the prepared index plus a ``split`` column (train/val/test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexnet.errors import ChexnetError
from chexnet.labels import LABELS

SPLITS = ("train", "val", "test")


class LeakageError(ChexnetError, AssertionError):
    """A patient appears in more than one split."""


def patient_split(index: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    """Assign every image a split so that each patient's images all share one split.

    Patients are shuffled with ``seed`` and taken in turn into test, then val, until each holds its
    share of *images*; the rest are train.
    """
    per_patient = index.groupby("patient", sort=True).size()
    order = np.random.default_rng(seed).permutation(len(per_patient))
    patients = per_patient.index.to_numpy()[order]
    counts = per_patient.to_numpy()[order]
    cumulative = np.cumsum(counts) / counts.sum()
    assignment = np.where(
        cumulative <= test_fraction,
        "test",
        np.where(cumulative <= test_fraction + val_fraction, "val", "train"),
    )
    # Small sets can leave test or val empty: give each at least one patient.
    for name, position in (("test", 0), ("val", 1)):
        if name not in assignment and len(assignment) > 2:
            assignment[position] = name
    split_of = dict(zip(patients, assignment, strict=True))
    return index["patient"].map(split_of).rename("split")


def check_no_patient_overlap(frame: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` naming the patients found in two splits."""
    splits_per_patient = frame.groupby("patient")["split"].nunique()
    leaking = splits_per_patient[splits_per_patient > 1]
    if len(leaking):
        raise LeakageError(
            f"{len(leaking)} patient(s) appear in more than one split, e.g. {list(leaking.index[:5])}"
        )


def split_summary(frame: pd.DataFrame) -> dict[str, object]:
    """Images, patients and positives per finding in each split (``metrics/split.json``)."""
    summary: dict[str, object] = {}
    for name in SPLITS:
        part = frame[frame["split"] == name]
        summary[name] = {
            "images": len(part),
            "patients": int(part["patient"].nunique()),
            "positives": {label: int(part[label].sum()) for label in LABELS},
        }
    summary["patient_overlap"] = 0
    return summary
