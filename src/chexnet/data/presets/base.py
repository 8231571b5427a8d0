"""What a dataset preset is: its columns, patient and view rules, and how its table is read.

A preset is one :class:`Preset` object in its own module (``seed.py``, ``nih.py``, ...), collected in
:mod:`chexnet.data.presets.registry`. Adding a dataset touches its module, the registry's tuple, its demo
layout (:mod:`chexnet.synthetic.layouts`: how the demo stage writes a stand-in in its shape; the data
layer carries no demo code), its tests and docs/data.md; nothing else in the code names presets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from chexnet.data.tables import NIH_NAME, NO_PATIENT_COLUMN, DataError


@dataclass(frozen=True)
class Columns:
    """Which columns of the table hold what.

    ``label`` names the ``|``-separated findings column of a long table (seed, NIH); ``None`` means a
    wide table (CheXpert, MIMIC) with one column per finding, every column not in ``metadata``.
    """

    image: str
    label: str | None
    patient: str | None  # None: derive from the image entry with ``patient_pattern``
    view: str | None = None  # column whose values are PA / AP / lateral (None: no view filter possible)
    metadata: tuple[str, ...] = ()  # wide tables: the columns that are not findings
    patient_pattern: str = NIH_NAME
    # Subgroup attributes the layout knows, (attribute, column): carried by prepare into groups.parquet
    # when the table has the column (sex: M/F spellings, age: years, view: PA/AP/lateral).
    groups: tuple[tuple[str, str], ...] = ()


# A reader turns the table file as read into the table the preset's columns describe (joins, a view
# column); it gets the table, its path and data.metadata_table.
Reader = Callable[[pd.DataFrame, str | Path, str | Path], pd.DataFrame]


def as_read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """The reader of a preset whose file already is its table."""
    return table


@dataclass(frozen=True)
class Preset:
    name: str
    columns: Columns
    read: Reader = as_read
    notes: str = ""  # what files the preset reads: said when data.preset names no preset

    def resolve_columns(self, image_column: str, label_column: str, patient_column: str) -> Columns:
        """The preset's column names, each overridden by its own param when that is set."""
        base = self.columns
        if label_column and base.label is None:
            raise DataError(
                f"params: data.label_column does not apply to the wide {self.name} table; leave it empty"
            )
        patient = patient_column or base.patient
        return dataclasses.replace(
            base,
            image=image_column or base.image,
            label=label_column or base.label,
            patient=None if patient in (None, NO_PATIENT_COLUMN) else patient,
        )
