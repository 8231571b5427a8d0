"""MIMIC-CXR-JPG: the ``-chexpert`` (or ``-negbio``) label table, one row a study, joined to
``-metadata`` (one row an image) on ``subject_id``, ``study_id``; each image's path is built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import SOURCE_REJECTS, DataError, read_table, require_columns

PATH_COLUMN = "image_path"  # built by read()
KEYS = ("subject_id", "study_id")


def read(labels: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """One row an image (labels per study), with each image's path and a ``view`` column."""
    if not metadata_table:
        raise DataError(
            "params: the mimic preset needs data.metadata_table (mimic-cxr-2.0.0-metadata.csv.gz) "
            "beside data.table (mimic-cxr-2.0.0-chexpert.csv.gz or -negbio)"
        )
    metadata = read_table(metadata_table)
    require_columns(labels, dict(zip(("subject_id", "study_id"), KEYS, strict=True)), table_path)
    require_columns(
        metadata,
        {"metadata_table": "dicom_id", "subject_id": "subject_id", "study_id": "study_id"},
        metadata_table,
    )
    table = join(labels, metadata, table_path, metadata_table)
    subject = table["subject_id"].astype("int64").astype(str)
    study = table["study_id"].astype("int64").astype(str)
    table[PATH_COLUMN] = (
        "files/p"
        + subject.str[:2]
        + "/p"
        + subject
        + "/s"
        + study
        + "/"
        + table["dicom_id"].astype(str)
        + ".jpg"
    )
    position = table.get("ViewPosition", pd.Series("", index=table.index)).fillna("").astype(str)
    table["view"] = np.where(position.str.upper().isin(["LATERAL", "LL", "RL"]), "lateral", position)
    return table


def join(
    labels: pd.DataFrame, metadata: pd.DataFrame, table_path: str | Path, metadata_path: str | Path
) -> pd.DataFrame:
    """One row per image: MIMIC's metadata joined to the per-study labels on (subject_id, study_id).

    A metadata row with a blank key is a counted reject (``blank_key``); a study labelled twice is
    refused with its rows (which label row is right is the user's call); metadata rows whose study has
    no label row are counted in the report (a -negbio or test-only label table covers fewer studies).
    """
    keys = list(KEYS)
    keep = [c for c in ("dicom_id", *KEYS, "ViewPosition") if c in metadata.columns]
    metadata = metadata[keep].reset_index(drop=True)
    blank = metadata[keys].isna().any(axis=1) | (
        metadata[keys].astype(str).apply(lambda c: c.str.strip()) == ""
    ).any(axis=1)
    rejects = [
        {
            "image": str(row.dicom_id),
            "table_row": int(i),
            "reason": "blank_key",
            "detail": f"{metadata_path}: subject_id or study_id is blank",
        }
        for i, row in metadata[blank].iterrows()
    ]
    labelled_twice = labels.duplicated(subset=keys, keep=False)
    if labelled_twice.any():
        at = labels.index[labelled_twice][0]
        subject, study = labels.at[at, "subject_id"], labels.at[at, "study_id"]
        rows = labels.index[(labels["subject_id"] == subject) & (labels["study_id"] == study)].tolist()
        raise DataError(
            f"table {table_path}: study subject_id {subject}, study_id {study} is "
            f"labelled on rows {rows[:10]} ({int(labelled_twice.sum())} rows of studies labelled more than "
            "once); a study has one label row: remove the duplicates"
        )
    metadata = metadata[~blank]
    for key in keys:  # float (a NaN once there) or text ids against ints: join on the same type
        metadata[key] = pd.to_numeric(metadata[key], errors="coerce").astype("Int64")
        labels = labels.assign(**{key: pd.to_numeric(labels[key], errors="coerce").astype("Int64")})
    joined = metadata.merge(labels, on=keys, how="inner", validate="many_to_one")
    if joined.empty:
        raise DataError(
            f"no row of {metadata_path} ({len(metadata)} rows) matches a study of {table_path} "
            f"({len(labels)} rows) on subject_id and study_id: are they the same release?"
        )
    joined.attrs[SOURCE_REJECTS] = rejects
    joined.attrs["join"] = {
        "metadata_rows": len(metadata) + len(rejects),
        "metadata_rows_without_labels": int(len(metadata) - len(joined)),
    }
    return joined


PRESET = Preset(
    name="mimic",
    columns=Columns(
        PATH_COLUMN,
        None,
        "subject_id",
        view="view",
        metadata=(*KEYS, "dicom_id", "ViewPosition", PATH_COLUMN, "gender", "anchor_age"),
        groups=(("sex", "gender"), ("age", "anchor_age"), ("view", "view")),
    ),
    read=read,
    notes="MIMIC-CXR-JPG's -chexpert (or -negbio) table with data.metadata_table: -metadata "
    "(and data.demographics_table: MIMIC-IV's patients.csv for sex and age)",
)
