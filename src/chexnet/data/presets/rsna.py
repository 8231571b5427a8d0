"""RSNA Pneumonia Detection Challenge (``stage_2_train_labels.csv``): one row per box (``patientId``,
``x``, ``y``, ``width``, ``height``, ``Target``), one row with ``Target`` 0 and no box for an image
without pneumonia. An image is ``Pneumonia`` when any row says ``Target`` 1; the same table is a box
table (layout ``rsna``). Images are ``<patientId>.dcm`` (``data.image_column: image_png`` for PNG
conversions); the challenge's ``patientId`` is one image (and, in this release, one patient).

``data.metadata_table`` may name the DICOM-header table (torchxrayvision ships one:
``kaggle_stage_2_train_images_dicom_headers.csv.gz``, columns ``PatientID``, ``PatientSex``,
``PatientAge``, ``ViewPosition``): it gives the view (for ``data.views``) and the sex and age subgroups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import NO_FINDING
from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import DataError, read_table, require_columns

FINDING = "Pneumonia"  # what Target 1 means (the challenge's "lung opacity suggestive of pneumonia")
FINDINGS = "findings"


def read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """One row an image: Pneumonia or No Finding, its file names, and the header table's columns."""
    require_columns(table, {"image_column": "patientId", "label_column": "Target"}, table_path)
    target = pd.to_numeric(table["Target"], errors="coerce")
    bad = table["Target"].notna() & ~target.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"table {table_path}, column 'Target', row {row}: {table['Target'].iloc[row]!r} "
                        "is not 0 or 1")  # fmt: skip
    ids = table["patientId"].astype(str)
    per_image = target.groupby(ids, sort=False).max()
    out = pd.DataFrame({"patientId": per_image.index})
    out[FINDINGS] = np.where(per_image.to_numpy() == 1, FINDING, NO_FINDING)
    out.loc[per_image.isna().to_numpy(), FINDINGS] = np.nan  # no Target at all: rejected by prepare
    out["image_path"], out["image_png"] = out["patientId"] + ".dcm", out["patientId"] + ".png"
    if metadata_table:
        headers = read_table(metadata_table)
        require_columns(headers, {"metadata_table": "PatientID"}, metadata_table)
        keep = [c for c in ("PatientID", "PatientSex", "PatientAge", "ViewPosition") if c in headers.columns]
        headers = headers[keep].drop_duplicates("PatientID").set_index("PatientID")
        out = out.join(headers, on="patientId")
        out["view"] = out.get("ViewPosition", pd.Series("", index=out.index)).fillna("").astype(str)
    return out


PRESET = Preset(
    name="rsna",
    columns=Columns(
        "image_path",
        FINDINGS,
        "patientId",
        view="view",
        groups=(("sex", "PatientSex"), ("age", "PatientAge"), ("view", "view")),
    ),
    read=read,
    notes="RSNA Pneumonia's stage_2_train_labels.csv, optionally data.metadata_table: its DICOM headers",
)
