"""Every dataset preset by name: what ``data.preset`` and ``demo.layout`` may say.

The schema (:mod:`chexnet.config`) cannot import this (it sits below the data layer), so these names
are checked here: by the check stage (first under ``dvc repro``), by prepare and the demo stage before
any work, and by ``chexnet check``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from chexnet.data.presets import chexpert, google_nih, mimic, nih, padchest, rsna, seed, vindr
from chexnet.data.presets.base import Columns, Preset
from chexnet.data.tables import DataError, join_demographics, read_table

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (seed.PRESET, nih.PRESET, chexpert.PRESET, mimic.PRESET, padchest.PRESET, vindr.PRESET,
              rsna.PRESET, google_nih.PRESET)
}  # fmt: skip


def get(name: str, key: str = "data.preset") -> Preset:
    """The preset called ``name``; anything else is refused naming the param and the choices."""
    if name not in PRESETS:
        known = "; ".join(f"{p.name} ({p.notes})" for p in PRESETS.values())
        raise DataError(f"params: {key} must be one of: {known}; got {name!r}")
    return PRESETS[name]


def resolve_columns(preset: str, image_column: str, label_column: str, patient_column: str) -> Columns:
    """Column names from the preset, each overridden by its own param when that is set."""
    return get(preset).resolve_columns(image_column, label_column, patient_column)


def read_source(
    preset: str,
    table_path: str | Path,
    metadata_table: str | Path = "",
    demographics_table: str | Path = "",
    patient_column: str = "",
) -> pd.DataFrame:
    """The table as the preset needs it (MIMIC: joined to its metadata, CheXpert: one view column), with
    a one-row-per-patient ``demographics_table`` joined on the patient column when one is given (MIMIC-IV's
    ``patients.csv`` gives MIMIC-CXR its sex and age)."""
    chosen = get(preset)
    table = chosen.read(read_table(table_path), table_path, metadata_table)
    if demographics_table:
        patient = chosen.resolve_columns("", "", patient_column).patient
        table = join_demographics(table, demographics_table, patient, table_path)
    return table
