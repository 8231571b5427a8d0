"""VinDr-CXR (``annotations_train.csv`` / ``annotations_test.csv``, Kaggle's ``train.csv``): one row per
radiologist and box (``image_id``, ``class_name``, ``rad_id``, ``x_min``, ``y_min``, ``x_max``,
``y_max``), ``No finding`` rows without a box. An image is positive for a finding when **any** reader
marked it (as torchxrayvision's ``VinDr_Dataset`` reads it); the same table is a box table
(:mod:`chexnet.explain.boxes`, layout ``vindr``) with every reader's boxes.

VinDr-CXR publishes no patient ids: each image is its own patient, so a split cannot keep a patient's
follow-ups together (the dataset's images are one per study; docs/data.md says so). Images are
``<image_id>.dicom`` under ``data.images``; for PNG conversions set ``data.image_column: image_png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import NO_FINDING, SEPARATOR
from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import require_columns

NO_FINDING_CLASS = "No finding"  # VinDr's spelling
FINDINGS, READERS = "findings", "readers"  # built by read()


def read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """One row an image: the union of its readers' classes, how many readers, the file names."""
    require_columns(table, {"image_column": "image_id", "label_column": "class_name"}, table_path)
    classes = table["class_name"].astype(str).str.strip().where(table["class_name"].notna(), "")
    per_image = (
        pd.DataFrame({"image_id": table["image_id"].astype(str), "class_name": classes})
        .groupby("image_id", sort=False)["class_name"]
        .agg(lambda cells: SEPARATOR.join(sorted({c for c in cells if c and c != NO_FINDING_CLASS})))
    )
    blank = table.groupby(table["image_id"].astype(str), sort=False)["class_name"].agg(
        lambda cells: cells.isna().all()
    )
    out = per_image.rename(FINDINGS).reset_index()
    out[FINDINGS] = np.where(out[FINDINGS] == "", NO_FINDING, out[FINDINGS])
    out.loc[out["image_id"].map(blank).to_numpy(dtype=bool), FINDINGS] = np.nan  # no class at all: rejected
    if "rad_id" in table.columns:
        readers = table.groupby(table["image_id"].astype(str), sort=False)["rad_id"].nunique()
        out[READERS] = out["image_id"].map(readers).astype("int64")
    out["image_path"] = out["image_id"] + ".dicom"
    out["image_png"] = out["image_id"] + ".png"
    return out


PRESET = Preset(
    name="vindr",
    columns=Columns("image_path", FINDINGS, "image_id"),
    read=read,
    notes="VinDr-CXR's annotations_train.csv / annotations_test.csv (or Kaggle's train.csv)",
)
