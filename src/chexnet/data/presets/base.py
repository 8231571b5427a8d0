"""What a dataset preset is: its columns, patient and view rules, how its table is read, its demo layout.

A preset is one :class:`Preset` object in its own module (``seed.py``, ``nih.py``, ...), collected in
:mod:`chexnet.data.presets.registry`. Adding a dataset touches its module, the registry's tuple, its tests
and docs/data.md; nothing else in the code names presets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import NIH14, NO_FINDING, SEPARATOR
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


@dataclass(frozen=True)
class DrawnImage:
    """One generated demo image's facts, before a layout decides its file name and table row."""

    patient: int
    follow_up: int
    index: int
    findings: frozenset[str]
    sex: str = "F"  # F | M: the patient's, drawn on its own stream (chexnet.data.demo)
    age: int = 60  # years at this image


# A reader turns the table file as read into the table the preset's columns describe (joins, a view
# column); it gets the table, its path and data.metadata_table.
Reader = Callable[[pd.DataFrame, str | Path, str | Path], pd.DataFrame]
# A demo writer writes the layout's table file(s) under the demo folder and returns the main table;
# it gets the folder, the drawn images, each image's frontal view (PA/AP) and the demo seed.
DemoWriter = Callable[[Path, list[DrawnImage], np.ndarray, int], pd.DataFrame]


def as_read(table: pd.DataFrame, table_path: str | Path, metadata_table: str | Path) -> pd.DataFrame:
    """The reader of a preset whose file already is its table."""
    return table


@dataclass(frozen=True)
class DemoLayout:
    """How the demo stage writes its set in this preset's layout."""

    table: str  # the main table under the demo folder (what data.table names)
    images: str  # the image folder under the demo folder ("": the demo folder itself)
    entry: Callable[[DrawnImage], str]  # an image's entry in the table (its path under the images)
    write: DemoWriter


@dataclass(frozen=True)
class Preset:
    name: str
    columns: Columns
    demo: DemoLayout
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


def nih_file_name(drawn: DrawnImage) -> str:
    """NIH's ``PPPPPPPP_FFF.png``: patient, then follow-up."""
    return f"{10000 + drawn.patient:08d}_{drawn.follow_up:03d}.png"


def findings_cells(drawn: list[DrawnImage]) -> list[str]:
    """Each image's ``|``-separated findings in NIH's order, ``No Finding`` for none (the long tables)."""
    return [SEPARATOR.join(f for f in NIH14 if f in d.findings) or NO_FINDING for d in drawn]


def _wide_value(rng: np.random.Generator, present: bool) -> float:
    """A CheXpert-style cell: mostly 1.0 when present (15 % uncertain, -1.0), mostly blank when absent
    (10 % an explicit 0.0, 5 % uncertain): so every uncertainty and blank policy has work to do."""
    draw = rng.random()
    if present:
        return -1.0 if draw < 0.15 else 1.0
    return 0.0 if draw < 0.10 else (-1.0 if draw < 0.15 else np.nan)


def wide_labels(drawn: list[DrawnImage], seed: int) -> pd.DataFrame:
    """The wide tables' finding columns (CheXpert, MIMIC): ``No Finding`` first, then NIH's 14."""
    rng = np.random.default_rng(seed + 1)  # its own stream: the images stay those of the seed layout
    wide = pd.DataFrame({f: [_wide_value(rng, f in d.findings) for d in drawn] for f in NIH14})
    wide.insert(0, NO_FINDING, [1.0 if not d.findings else np.nan for d in drawn])
    return wide
