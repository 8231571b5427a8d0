"""Label counts on the real tables torchxrayvision ships in its wheel, against its own dataset classes.

Equal where both read the table by the same rule; where the rules differ (docs/data.md, "Counts") the
difference is asserted to be exactly what the rule explains. Skipped without torchxrayvision."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexnet.core.labels import LabelOptions
from chexnet.data.counts import label_counts

xrv = pytest.importorskip("torchxrayvision")
DATA = Path(os.path.dirname(xrv.__file__)) / "data"
ALL = {"min_positives": 1, "drop_rare": True}


def _table(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"torchxrayvision ships no {name} here")
    return path


def _xrv_counts(dataset) -> dict[str, tuple[int, int]]:
    labels = dataset.labels
    return {
        p: (int(np.nansum(labels[:, j] == 1)), int(np.isnan(labels[:, j]).sum()))
        for j, p in enumerate(dataset.pathologies)
    }


def _ours(counts: pd.DataFrame) -> dict[str, tuple[int, int]]:
    return {r.finding: (int(r.positives), int(r.masked)) for r in counts.itertuples()}


def test_chexpert_counts_equal_torchxrayvision_with_the_no_finding_rule(tmp_path: Path):
    """views PA+AP, uncertain ignore, blank ignore: torchxrayvision's rule (uncertain → NaN, blank
    stays NaN, No Finding = 1 → 0 but Support Devices). Positives and masked counts, all 13 findings."""
    path = _table("chexpert_train.csv.gz")
    ours = _ours(
        label_counts("chexpert", path, LabelOptions(**ALL, uncertain="ignore", blank="ignore"), ["PA", "AP"])
    )
    theirs = _xrv_counts(
        xrv.datasets.CheX_Dataset(str(tmp_path), csvpath=str(path), views=["PA", "AP"], unique_patients=False)
    )
    theirs["Pleural Effusion"] = theirs.pop("Effusion")  # its rename; chexnet keeps CheXpert's name
    assert ours == theirs
    assert ours["Atelectasis"][1] < 160_267  # the masked count before the rule (issue #22)


def test_nih_counts_equal_torchxrayvision(tmp_path: Path):
    """NIH's 14: its substring match and chexnet's exact tokens agree on this vocabulary (no finding
    name is part of another)."""
    path = _table("Data_Entry_2017_v2020.csv.gz")
    ours = _ours(label_counts("nih", path, LabelOptions(**ALL), ["PA", "AP"]))
    theirs = _xrv_counts(
        xrv.datasets.NIH_Dataset(str(tmp_path), csvpath=str(path), views=["PA", "AP"], unique_patients=False)
    )
    assert {k: ours[k] for k in theirs} == theirs


def test_google_nih_relabels_equal_torchxrayvision(tmp_path: Path):
    path = _table("google2019_nih-chest-xray-labels.csv.gz")
    ours = _ours(label_counts("google_nih", path, LabelOptions(**ALL), ["PA", "AP"]))
    theirs = _xrv_counts(
        xrv.datasets.NIH_Google_Dataset(
            str(tmp_path), csvpath=str(path), views=["PA", "AP"], unique_patients=False
        )
    )
    renamed = {"Lung Opacity": "Airspace opacity", "Nodule/Mass": "Nodule or mass"}
    assert {renamed.get(k, k): v for k, v in theirs.items()} == ours


def test_rsna_pneumonia_equals_torchxrayvision_with_its_header_table(tmp_path: Path):
    path, headers = (
        _table("kaggle_stage_2_train_labels.csv.zip"),
        _table("kaggle_stage_2_train_images_dicom_headers.csv.gz"),
    )
    ours = _ours(label_counts("rsna", path, LabelOptions(**ALL), ["PA", "AP"], metadata_table=headers))
    theirs = _xrv_counts(
        xrv.datasets.RSNA_Pneumonia_Dataset(
            str(tmp_path), csvpath=str(path), dicomcsvpath=str(headers), views=["PA", "AP"]
        )
    )
    assert ours == {"Pneumonia": theirs["Pneumonia"]}


def test_vindr_any_reader_equals_torchxrayvision(tmp_path: Path):
    """An image is positive when any reader marked it, as torchxrayvision reads it; its names are
    matched case-blind and through its own synonyms."""
    path = _table("vinbigdata-train.csv.gz")
    counts = label_counts("vindr", path, LabelOptions(**ALL))
    ours = {f.lower(): p for f, p in zip(counts["finding"], counts["positives"], strict=True)}
    dataset = xrv.datasets.VinDr_Dataset(str(tmp_path), csvpath=str(path))
    theirs = _xrv_counts(dataset)
    synonyms = {"effusion": "pleural effusion", "pleural_thickening": "pleural thickening"}
    assert {synonyms.get(p.lower(), p.lower()): v[0] for p, v in theirs.items()} == ours
    assert (counts["images"] == 15_000).all()


def test_padchest_exact_tokens_equal_torchxrayvision_except_where_a_name_is_inside_another(tmp_path: Path):
    """torchxrayvision matches substrings of the raw cell (``'pneumonia'`` also hits ``'atypical
    pneumonia'``); chexnet matches whole findings. Over the rows torchxrayvision keeps (it drops
    children and 21 unreadable images: a filter, not a label rule), the counts are equal for every
    finding whose name is part of no other finding's, and for the rest torchxrayvision's count is ours
    plus the images where only a longer finding holds the name."""
    path = _table("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    dataset = xrv.datasets.PC_Dataset(
        str(tmp_path), csvpath=str(path), views=["PA", "AP"], unique_patients=False
    )
    kept = pd.read_csv(path, low_memory=False, dtype={"PatientID": str})  # ids beyond int64, kept as text
    kept = kept[kept["ImageID"].isin(set(dataset.csv["ImageID"]))]
    subset = tmp_path / "padchest_kept.parquet"  # the table reader takes either; Parquet is seconds faster
    kept.to_parquet(subset, index=False)
    counts = label_counts("padchest", subset, LabelOptions(**ALL), ["PA", "AP"])
    ours = dict(zip(counts["finding"], counts["positives"], strict=True))
    tokens = [set(t.strip() for t in ast.literal_eval(cell)) for cell in dataset.csv["Labels"]]
    theirs = _xrv_counts(dataset)
    same, differ = [], []
    for pathology in (
        "Atelectasis",
        "Cardiomegaly",
        "Pneumonia",
        "Emphysema",
        "Fibrosis",
        "Hernia",
        "Pneumothorax",
        "Edema",
        "Scoliosis",
        "Granuloma",
        "Tuberculosis",
    ):
        name = pathology.lower()
        longer = {t for row in tokens for t in row if name in t and t != name}
        only_longer = sum(1 for row in tokens if name not in row and row & longer)
        assert theirs[pathology][0] == ours.get(name, 0) + only_longer, pathology
        (differ if only_longer else same).append(pathology)
    assert same and differ  # both kinds occur on the real table (docs/data.md lists them)
