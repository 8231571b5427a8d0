"""Patient-level train/validation/test splits.

The seed splits images at random, so one patient's follow-up images land in both train and test and
the test score measures memorised anatomy, not generalisation. Here whole patients are assigned to one
split (stratified across findings, or NIH's official lists); :func:`check_no_patient_overlap` is
asserted by the split stage every time it runs. Splitting needs only the prepared index, never the
images, so it can be run and tested on the full NIH metadata alone.

Output contract: ``split.parquet`` = the prepared index plus a ``split`` column (train/val/test).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelList

SPLITS = ("train", "val", "test")


class LeakageError(ChexnetError, AssertionError):
    """A patient appears in more than one split."""


class SplitError(ChexnetError, ValueError):
    """The split cannot be made as configured (missing list, images in no list, ...)."""


def _assign_stratified(
    positives: np.ndarray, images: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Assign groups (patients) to splits so each split gets its share of every label and of images.

    Iterative stratification (Sechidis et al., 2011) on groups: patients are taken rarest finding
    first, and each goes to the split that still lacks most of that finding (relative to its target),
    ties going to the split lacking most images. Patients with no finding fill the image shares. Rare
    findings (NIH's Hernia: 227 images of 110 patients) thus land in every split.

    ``positives``: groups × labels counts; ``images``: images per group; returns a split number per group.
    """
    n_groups = len(images)
    label_totals = positives.sum(axis=0).astype(float)
    wanted_labels = fractions[:, None] * label_totals[None, :]
    wanted_images = fractions * images.sum()
    have_labels = np.zeros_like(wanted_labels)
    have_images = np.zeros(len(fractions))
    assignment = np.full(n_groups, -1)

    has_label = positives > 0
    rarity = np.where(has_label, label_totals[None, :], np.inf)
    rarest = rarity.argmin(axis=1)
    rarest_total = rarity.min(axis=1)
    closed = np.where(fractions > 0, 0.0, -np.inf)  # a split with no share never takes anyone
    order = np.lexsort((rng.random(n_groups), rarest_total))  # rarest first, random among equals
    for group in order:
        image_need = (wanted_images - have_images) / np.maximum(wanted_images, 1e-9) + closed
        if np.isfinite(rarest_total[group]):
            label = rarest[group]
            label_need = (wanted_labels[:, label] - have_labels[:, label]) / np.maximum(
                wanted_labels[:, label], 1e-9
            )
            choice = np.lexsort((rng.random(len(fractions)), -image_need, -(label_need + closed)))[0]
        else:
            choice = np.lexsort((rng.random(len(fractions)), -image_need))[0]
        assignment[group] = choice
        have_labels[choice] += positives[group]
        have_images[choice] += images[group]
    return assignment


def _positives(frame: pd.DataFrame, labels: LabelList) -> pd.DataFrame:
    """0/1 label columns with masked (null) entries counted as not positive."""
    return frame[list(labels.names)].astype("Float64").fillna(0).astype(np.float64)


def patient_split(
    index: pd.DataFrame, labels: LabelList, *, val_fraction: float, test_fraction: float, seed: int
) -> pd.Series:
    """Seeded, patient-level train/val/test split, stratified across the findings of ``labels``.

    Every image of a patient gets that patient's split.
    """
    fractions = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    grouped = _positives(index, labels).assign(patient=index["patient"]).groupby("patient", sort=True)
    positives = grouped[list(labels.names)].sum().to_numpy()
    images = grouped.size().to_numpy()
    rng = np.random.default_rng(seed)
    assignment = _assign_stratified(positives, images, fractions, rng)
    # Tiny sets: give every split that should have patients at least one (taken from the largest).
    for split in np.flatnonzero(fractions > 0):
        if not (assignment == split).any() and len(assignment) >= 3:
            donor = np.bincount(assignment, minlength=len(fractions)).argmax()
            assignment[rng.choice(np.flatnonzero(assignment == donor))] = split
    split_of = dict(zip(grouped.size().index, np.asarray(SPLITS)[assignment], strict=True))
    return index["patient"].map(split_of).rename("split")


def read_image_list(path: str | Path) -> set[str]:
    """One image file name a line (NIH's ``test_list.txt`` / ``train_val_list.txt``, ``.gz`` too)."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split list {path} does not exist; set split.test_list (and split.train_val_list)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return {line.strip() for line in handle if line.strip()}


def official_split(
    index: pd.DataFrame,
    labels: LabelList,
    *,
    test_list: str | Path,
    train_val_list: str | Path | None,
    val_fraction: float,
    seed: int,
) -> pd.Series:
    """NIH's official split: test from ``test_list``; validation carved by patient from train_val.

    ``val_fraction`` is the validation share of all images, as with the random split. With a
    ``train_val_list``, every image must be in exactly one of the two lists.
    """
    names = index["image"].map(lambda name: Path(name).name)
    listed = read_image_list(test_list)
    in_test = names.isin(listed)
    if not in_test.any():
        raise SplitError(
            f"official split: none of the {len(index):,} prepared images is in split.test_list {test_list} "
            f"({len(listed):,} names, e.g. {sorted(listed)[:2]}; the table's are e.g. {list(names[:2])}): "
            "is it the list for this table? The test split would be empty"
        )
    if train_val_list:
        in_train_val = names.isin(read_image_list(train_val_list))
        nowhere, both = index["image"][~in_test & ~in_train_val], index["image"][in_test & in_train_val]
        if len(nowhere) or len(both):
            raise SplitError(
                f"official split: {len(nowhere)} images are in neither list (e.g. {list(nowhere[:3])}) and "
                f"{len(both)} in both (e.g. {list(both[:3])}); check split.test_list and split.train_val_list"
            )
    split = pd.Series(np.where(in_test, "test", "train"), index=index.index, name="split", dtype=object)
    rest = index[~in_test]
    if len(rest):
        share_of_rest = min(val_fraction / max(len(rest) / len(index), 1e-9), 0.99)
        carved = patient_split(rest, labels, val_fraction=share_of_rest, test_fraction=0.0, seed=seed)
        split[rest.index] = carved
    return split


def check_usable(frame: pd.DataFrame, labels: LabelList) -> None:
    """Refuse a split that later stages cannot use, with every split's counts: an empty split, and a
    validation or test split where no finding has both a positive and a negative (no threshold can be
    chosen there, no AUROC measured). A training split of one image cannot train (BatchNorm)."""
    counts = {name: int((frame["split"] == name).sum()) for name in SPLITS}
    said = ", ".join(f"{name} {count}" for name, count in counts.items())
    if counts["train"] < 2 or not counts["val"] or not counts["test"]:
        raise SplitError(
            f"split: images per split are {said}: every split needs images (train at least 2); use more "
            "data, or other split fractions or lists"
        )
    for name in ("val", "test"):
        part = _positives(frame[frame["split"] == name], labels)
        known = frame.loc[frame["split"] == name, list(labels.names)].notna()
        both = [label for label in labels.names if 0 < part[label].sum() < known[label].sum()]
        if not both:
            raise SplitError(
                f"split: in the {name} split ({counts[name]} images) no finding has both a positive and a "
                f"negative image, so nothing can be {'chosen' if name == 'val' else 'measured'} there "
                f"(images per split: {said}); use more data or larger split fractions"
            )


def check_no_patient_overlap(frame: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` naming the patients found in two splits."""
    splits_per_patient = frame.groupby("patient")["split"].nunique()
    leaking = splits_per_patient[splits_per_patient > 1]
    if len(leaking):
        raise LeakageError(
            f"{len(leaking)} patient(s) appear in more than one split, e.g. {list(leaking.index[:5])}"
        )


def split_summary(frame: pd.DataFrame, labels: LabelList) -> dict[str, object]:
    """Images, patients, positives and masked labels per finding in each split (``metrics/split.json``)."""
    summary: dict[str, object] = {}
    for name in SPLITS:
        part = frame[frame["split"] == name]
        entry = {
            "images": len(part),
            "patients": int(part["patient"].nunique()),
            "positives": {label: int(_positives(part, labels)[label].sum()) for label in labels.names},
        }
        masked = {label: int(part[label].isna().sum()) for label in labels.names}
        if any(masked.values()):
            entry["masked"] = masked
        summary[name] = entry
    summary["patient_overlap"] = 0
    return summary
