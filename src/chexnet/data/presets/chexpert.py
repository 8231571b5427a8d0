"""CheXpert (``train.csv`` / ``valid.csv``): one column per observation, 1.0 / 0.0 / -1.0 (uncertain) /
blank; the patient is the ``patientNNNNN`` folder of ``Path``; the view from ``Frontal/Lateral`` and
``AP/PA``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import require_columns

METADATA = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
PATIENT_IN_PATH = r"patient(\d+)"  # CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg


def read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """CheXpert's view made one ``view`` column: ``lateral``, else the AP/PA value."""
    require_columns(table, {"image_column": "Path"}, table_path)
    lateral = table.get("Frontal/Lateral", pd.Series("", index=table.index)).astype(str).str.lower()
    frontal_view = table.get("AP/PA", pd.Series("", index=table.index)).fillna("").astype(str).str.upper()
    table["view"] = np.where(lateral == "lateral", "lateral", frontal_view)
    return table


PRESET = Preset(
    name="chexpert",
    columns=Columns(
        "Path",
        None,
        None,
        view="view",
        metadata=METADATA,
        patient_pattern=PATIENT_IN_PATH,
        groups=(("sex", "Sex"), ("age", "Age"), ("view", "view")),
    ),
    read=read,
    notes="CheXpert's train.csv or valid.csv",
)
