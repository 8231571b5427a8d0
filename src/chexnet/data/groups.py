"""Subgroup attributes of each prepared image (sex, age, view, and any column the user names): what
the evaluate stage reports results by (:mod:`chexnet.evaluation.subgroups`).

A preset knows where its table keeps them (``Columns.groups``: NIH ``Patient Gender``, CheXpert
``Sex``, ...) and they are carried when the table has the column; ``data.subgroups`` names more
(``{attribute: column}``), and those must exist. Values are made comparable across datasets: sex
``F`` / ``M`` (``Female``, ``male``, ... likewise; anything else ``other``, blank ``unknown``), age in
years (a number, or NIH's old ``058Y``; outside 0–120 or blank: missing), view ``PA`` / ``AP`` /
``lateral`` as :func:`view_value` reads it; other attributes as text, blank ``unknown``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.data.presets.base import Columns
from chexnet.data.tables import require_columns

UNKNOWN = "unknown"
GROUPS_FILE = "groups.parquet"
_SEX = {"F": "F", "FEMALE": "F", "W": "F", "WOMAN": "F", "M": "M", "MALE": "M", "MAN": "M"}


def sex_value(values: pd.Series) -> pd.Series:
    text = values.fillna("").astype(str).str.strip().str.upper()
    return text.map(lambda v: _SEX.get(v, "other" if v else UNKNOWN))


def age_value(values: pd.Series) -> pd.Series:
    """Years as float; ``058Y`` (NIH's first release) → 58; NaN where missing or outside 0–120."""
    number = pd.to_numeric(values, errors="coerce")
    text = values.astype(str).str.extract(r"^\s*(\d{1,3})\s*[Yy]?\s*$")[0]
    number = number.fillna(pd.to_numeric(text, errors="coerce")).astype(float)
    return number.where((number >= 0) & (number <= 120))


def view_value(values: pd.Series) -> pd.Series:
    text = values.fillna("").astype(str).str.strip()
    upper = text.str.upper()
    lateral = upper.isin(["LATERAL", "L", "LL", "RL"])
    return pd.Series(np.where(lateral, "lateral", np.where(upper == "", UNKNOWN, upper)), index=values.index)


def text_value(values: pd.Series) -> pd.Series:
    text = values.fillna("").astype(str).str.strip()
    return text.where(text != "", UNKNOWN)


NORMALISERS = {"sex": sex_value, "age": age_value, "view": view_value}


def group_columns(
    table: pd.DataFrame, columns: Columns, named: Mapping[str, str], table_path: str | Path
) -> dict[str, str]:
    """``{attribute: column}``: the preset's that the table has, then ``data.subgroups`` (required)."""
    found = {attribute: column for attribute, column in columns.groups if column in table.columns}
    require_columns(table, {f"subgroups.{a}": c for a, c in named.items()}, table_path)
    return found | dict(named)


def group_frame(table: pd.DataFrame, attributes: Mapping[str, str]) -> pd.DataFrame:
    """One column per attribute, normalised, in the table's row order."""
    return pd.DataFrame(
        {attribute: NORMALISERS.get(attribute, text_value)(table[column]).to_numpy()
         for attribute, column in attributes.items()},
        index=table.index,
    )  # fmt: skip
