import numpy as np
import pandas as pd
import pytest

from chexnet.labels import LABELS
from chexnet.splits import LeakageError, check_no_patient_overlap, patient_split, split_summary


def _index(n_patients=50, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for _ in range(rng.integers(1, 6)):
            rows.append({"patient": str(p), **{label: int(rng.random() < 0.2) for label in LABELS}})
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", np.arange(len(frame)))
    return frame


def test_no_patient_in_two_splits_and_fractions_respected():
    index = _index()
    index["split"] = patient_split(index, val_fraction=0.1, test_fraction=0.2, seed=3)
    check_no_patient_overlap(index)
    assert index.groupby("patient")["split"].nunique().max() == 1
    shares = index["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.08 and abs(shares["val"] - 0.1) < 0.08
    summary = split_summary(index)
    assert sum(summary[s]["images"] for s in ("train", "val", "test")) == len(index)


def test_split_is_seeded():
    index = _index()
    a = patient_split(index, val_fraction=0.1, test_fraction=0.2, seed=1)
    b = patient_split(index, val_fraction=0.1, test_fraction=0.2, seed=1)
    c = patient_split(index, val_fraction=0.1, test_fraction=0.2, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_tiny_sets_still_get_val_and_test():
    index = _index(n_patients=4)
    split = patient_split(index, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert {"train", "val", "test"} <= set(split)


def test_leakage_is_caught():
    frame = pd.DataFrame({"patient": ["1", "1", "2"], "split": ["train", "test", "val"]})
    with pytest.raises(LeakageError, match="1 patient"):
        check_no_patient_overlap(frame)
