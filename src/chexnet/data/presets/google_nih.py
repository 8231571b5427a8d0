"""Google's expert relabels of NIH ChestX-ray14 (``google2019_nih-chest-xray-labels.csv.gz``, Majkowska
et al., Radiology 2020): NIH's columns plus four adjudicated findings, ``YES`` / ``NO`` (``Fracture``,
``Pneumothorax``, ``Airspace opacity``, ``Nodule or mass``), and ``Set Id`` (test / val). A test-label
table for NIH images: as an external set, ``Nodule or mass`` and ``Airspace opacity`` meet an NIH model
through ``aliases`` (docs/evaluation.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import DataError, require_columns

FINDINGS = ("Fracture", "Pneumothorax", "Airspace opacity", "Nodule or mass")
METADATA = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
            "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
            "Set Id")  # fmt: skip
VALUES = {"YES": 1.0, "NO": 0.0}


def read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """``YES`` / ``NO`` → 1.0 / 0.0 (blank stays blank); anything else is refused with its row."""
    require_columns(table, {"image_column": "Image Index"}, table_path)
    for finding in (f for f in FINDINGS if f in table.columns):
        cells = table[finding]
        text = cells.astype(str).str.strip().str.upper()
        bad = cells.notna() & ~text.isin(list(VALUES))
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"table {table_path}, column {finding!r}, row {row}: {cells.iloc[row]!r} is not "
                            "YES, NO or blank")  # fmt: skip
        table[finding] = text.map(VALUES).where(cells.notna(), np.nan)
    return table


PRESET = Preset(
    name="google_nih",
    columns=Columns(
        "Image Index",
        None,
        "Patient ID",
        view="View Position",
        metadata=METADATA,
        groups=(("sex", "Patient Gender"), ("age", "Patient Age"), ("view", "View Position")),
    ),
    read=read,
    notes="Google's NIH relabels, google2019_nih-chest-xray-labels.csv(.gz)",
)
