"""PadChest (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv``): one row an image; ``Labels``
holds a Python-list string of ~190 findings in English (``['pleural effusion', 'cardiomegaly']``),
``normal`` for none; ``Projection`` (PA, AP, AP_horizontal, L, ...); ``PatientID``;
``PatientSex_DICOM``; ``PatientBirth`` (a year) and ``StudyDate_DICOM`` (YYYYMMDD) give the age.

The list is parsed as a literal (never evaluated as code), each finding kept as an exact token:
torchxrayvision's ``PC_Dataset`` matches substrings of the raw cell instead (docs/data.md, "Counts").
Images are looked up as ``ImageID`` directly under ``data.images`` (the flat layout of the resized
releases and of torchxrayvision); for the original ``ImageDir/ImageID`` folders set
``data.image_column: image_in_folder``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import NO_FINDING, SEPARATOR
from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import DataError, require_columns

FINDINGS = "findings"  # built by read(): the parsed list, |-separated
NORMAL = "normal"  # PadChest's "no finding" token
VIEW_NAMES = {"L": "lateral", "AP_HORIZONTAL": "AP_horizontal"}  # AP_horizontal (supine) is not AP


def _findings_cell(cell: object, row: int, table_path: str | Path) -> object:
    """``"['a', 'b']"`` → ``"a|b"`` (``normal`` → No Finding); blank stays blank (rejected by prepare)."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)) or not str(cell).strip():
        return np.nan
    try:
        tokens = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError) as error:
        raise DataError(
            f"table {table_path}, column 'Labels', row {row}: {str(cell)[:80]!r} is not a list of "
            f"findings as PadChest writes them ({error})"
        ) from error
    if not isinstance(tokens, (list, tuple)):
        raise DataError(f"table {table_path}, column 'Labels', row {row}: {str(cell)[:80]!r} is not a list")
    kept = sorted({str(t).strip() for t in tokens if str(t).strip()})
    if SEPARATOR in "".join(kept):
        raise DataError(f"table {table_path}, column 'Labels', row {row}: a finding holds {SEPARATOR!r}")
    return SEPARATOR.join(NO_FINDING if t == NORMAL else t for t in kept) or np.nan


def read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """Findings made ``|``-separated, a ``view`` and an ``age`` column (study year − birth year)."""
    require_columns(table, {"image_column": "ImageID", "label_column": "Labels"}, table_path)
    table[FINDINGS] = [_findings_cell(c, i, table_path) for i, c in enumerate(table["Labels"])]
    projection = table.get("Projection", pd.Series("", index=table.index)).fillna("").astype(str)
    table["view"] = projection.str.upper().map(lambda v: VIEW_NAMES.get(v, v))
    if "PatientBirth" in table.columns and "StudyDate_DICOM" in table.columns:
        study_year = pd.to_numeric(table["StudyDate_DICOM"].astype(str).str[:4], errors="coerce")
        table["age"] = study_year - pd.to_numeric(table["PatientBirth"], errors="coerce")
    if "ImageDir" in table.columns:
        table["image_in_folder"] = table["ImageDir"].astype(str) + "/" + table["ImageID"].astype(str)
    return table


# The demo's findings in PadChest's own vocabulary (its terms for NIH's 14), so that an NIH-named model
# meets them only through aliases (params.yaml's default external set).
DEMO_NAMES = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural effusion",
    "Infiltration": "infiltrates", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "pulmonary edema",
    "Emphysema": "emphysema", "Fibrosis": "pulmonary fibrosis", "Pleural_Thickening": "pleural thickening",
    "Hernia": "hiatal hernia",
}  # fmt: skip


PRESET = Preset(
    name="padchest",
    columns=Columns(
        "ImageID",
        FINDINGS,
        "PatientID",
        view="view",
        groups=(("sex", "PatientSex_DICOM"), ("age", "age"), ("view", "view")),
    ),
    read=read,
    notes="PadChest's PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)",
)
