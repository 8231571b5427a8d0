import numpy as np
import pandas as pd
import pytest

from chexnet.core.labels import LabelList
from chexnet.data.splits import (
    LeakageError,
    SplitError,
    check_no_patient_overlap,
    official_split,
    patient_split,
    split_summary,
)
from tests.helpers import LABELS

LIST = LabelList(LABELS, "nih14")


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
    index["split"] = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.2, seed=3)
    check_no_patient_overlap(index)
    assert index.groupby("patient")["split"].nunique().max() == 1
    shares = index["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.2) < 0.08 and abs(shares["val"] - 0.1) < 0.08
    summary = split_summary(index, LIST)
    assert sum(summary[s]["images"] for s in ("train", "val", "test")) == len(index)


def test_split_is_seeded():
    index = _index()
    a = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.2, seed=1)
    b = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.2, seed=1)
    c = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.2, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_tiny_sets_still_get_val_and_test():
    index = _index(n_patients=4)
    split = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert {"train", "val", "test"} <= set(split)


def test_leakage_is_caught():
    frame = pd.DataFrame({"patient": ["1", "1", "2"], "split": ["train", "test", "val"]})
    with pytest.raises(LeakageError, match="1 patient"):
        check_no_patient_overlap(frame)


def _nih_index(nih_dir) -> pd.DataFrame:
    """The prepared index the NIH table would give, built from the metadata alone (no images)."""
    from chexnet.core.labels import LabelOptions, binarize
    from chexnet.data.findings import long_findings
    from chexnet.data.tables import read_table

    table = read_table(nih_dir / "Data_Entry_2017_v2020.csv.gz")
    index = pd.DataFrame(
        {
            "row": np.arange(len(table)),
            "image": table["Image Index"],
            "patient": table["Patient ID"].astype(str),
        }
    )
    rows, _, _ = long_findings(table["Finding Labels"], LabelOptions())
    index[list(LABELS)] = binarize(rows, LIST)
    return index


def test_full_nih_table_stratified_split_has_every_finding_everywhere(nih_dir):
    index = _nih_index(nih_dir)
    index["split"] = patient_split(index, LIST, val_fraction=0.1, test_fraction=0.2, seed=42)
    check_no_patient_overlap(index)
    summary = split_summary(index, LIST)
    for name, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(summary[name]["images"] / len(index) - share) < 0.02, name
        for label in LABELS:
            total = int(index[label].sum())
            got = summary[name]["positives"][label]
            assert got > 0, (name, label)
            # stratified: each split holds close to its share of every finding, Hernia (227) included
            assert abs(got / total - share) < 0.05, (name, label, got, total)


def test_official_split_uses_nih_lists_and_carves_val_by_patient(nih_dir):
    index = _nih_index(nih_dir)
    index["split"] = official_split(
        index,
        LIST,
        test_list=nih_dir / "test_list.txt.gz",
        train_val_list=nih_dir / "train_val_list.txt.gz",
        val_fraction=0.1,
        seed=0,
    )
    check_no_patient_overlap(index)
    counts = index["split"].value_counts()
    assert counts["test"] == 25_596
    assert counts["train"] + counts["val"] == 86_524
    assert abs(counts["val"] / len(index) - 0.1) < 0.01
    assert index.loc[index["split"] == "test", "patient"].nunique() == 2_797


def test_official_split_reports_images_in_no_list(tmp_path):
    index = _index(n_patients=5)
    index["image"] = [f"{i:08d}_000.png" for i in range(len(index))]
    (tmp_path / "test.txt").write_text("00000000_000.png\n")
    (tmp_path / "train_val.txt").write_text("00000001_000.png\n")
    with pytest.raises(SplitError, match="in neither list"):
        official_split(
            index,
            LIST,
            test_list=tmp_path / "test.txt",
            train_val_list=tmp_path / "train_val.txt",
            val_fraction=0.1,
            seed=0,
        )
    with pytest.raises(SplitError, match="does not exist"):
        official_split(
            index, LIST, test_list=tmp_path / "absent.txt", train_val_list="", val_fraction=0.1, seed=0
        )
