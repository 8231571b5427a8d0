"""Reading a table file (Parquet or CSV) and the checks every preset's table goes through.

The lowest module of :mod:`chexnet.data`: it knows files and columns, not findings or images.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from chexnet.core.errors import ChexnetError

NO_PATIENT_COLUMN = "none"  # patient ids come from the image entries (NIH file names, CheXpert paths)
NIH_NAME = r"^(\d{8})_\d{3}\.png$"  # PPPPPPPP_FFF.png: the patient is the first eight digits
SOURCE_REJECTS = "source_rejects"  # table.attrs key: rows a preset's reader could not use, counted by prepare


class DataError(ChexnetError, ValueError):
    """The input table or image folder cannot be used; the message says which file and what to do."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV table (by extension; ``.csv.gz`` too).

    NIH's original CSV ends every line with a comma; the empty trailing column it makes is dropped.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"table {path} does not exist: set data.table in params.yaml to your Parquet/CSV file"
        )
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if ".csv" in suffixes:
            table = pd.read_csv(path)
            empty = [c for c in table.columns if str(c).startswith("Unnamed:") and table[c].isna().all()]
            return table.drop(columns=empty)
    except UnicodeDecodeError as error:
        raise DataError(
            f"table {path} is not UTF-8 ({error.reason} at byte {error.start}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8) and rerun"
        ) from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"table {path} is empty: it has no header and no rows") from error
    except Exception as error:  # pyarrow's ArrowInvalid, pandas' ParserError, a gzip cut short, ...
        first = str(error).splitlines()[0] if str(error) else ""
        raise DataError(
            f"table {path} cannot be read as {'Parquet' if 'parquet' in suffixes else 'CSV'} "
            f"({type(error).__name__}: {first}); is the file complete? Re-export or copy it again"
        ) from error
    raise DataError(f"table {path}: unknown format {path.suffix!r}; use .parquet or .csv")


def require_columns(table: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Fail with the param name, the missing column and the columns present."""
    for param, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"table {path} has no column {column!r} (params: data.{param}); "
                f"columns present: {', '.join(map(repr, table.columns))}"
            )


def patients_from_file_names(names: pd.Series, table_path: str | Path, pattern: str = NIH_NAME) -> pd.Series:
    """Patient ids from the image entries: NIH file names ``PPPPPPPP_FFF.png``, CheXpert's ``patientNNNNN``
    folder; an entry that does not match needs a patient column."""
    compiled = re.compile(pattern)

    def find(entry: str) -> re.Match[str] | None:  # NIH: the file name; CheXpert: anywhere in the path
        return compiled.search(Path(entry).name if pattern == NIH_NAME else entry)

    matches = names.astype(str).map(find)
    bad = names[matches.isna()]
    if len(bad):
        raise DataError(
            f"table {table_path}: no patient column is configured and {len(bad)} image entries do not "
            f"carry a patient id (pattern {pattern!r}, e.g. {bad.iloc[0]!r}); a patient-level split needs "
            "patient ids: set data.patient_column to the column that holds them"
        )
    return matches.map(lambda m: str(int(m.group(1))))


def _join_key(values: pd.Series) -> pd.Series:
    """Patient ids compared as text, with whole numbers written without a decimal part: MIMIC's
    ``subject_id`` is an int in one table and a float (after a blank) or text in another."""
    numeric = pd.to_numeric(values, errors="coerce")
    whole = numeric.notna() & (numeric == numeric.round())
    text = values.astype(str).str.strip()
    return text.where(~whole, numeric.where(whole).astype("Int64").astype(str))


def _one_row_per_patient(
    demographics: pd.DataFrame,
    demographics_path: str | Path,
    patient_column: str,
    table: pd.DataFrame,
    table_path: str | Path,
) -> pd.DataFrame:
    """The demographics' columns keyed by ``_patient_key``, after the checks that keep a join from
    giving an image another patient's values or a second, conflicting column."""
    if patient_column not in demographics.columns:
        raise DataError(
            f"table {demographics_path} (data.demographics_table) has no column {patient_column!r}, the "
            f"patient column of {table_path}; columns present: {', '.join(map(repr, demographics.columns))}"
        )
    shared = [c for c in demographics.columns if c != patient_column and c in table.columns]
    if shared:
        raise DataError(
            f"columns {shared} are in both {table_path} and {demographics_path} (data.demographics_table): "
            "which one is right is unclear; drop them from one of the tables"
        )
    keys = _join_key(demographics[patient_column])
    twice = keys.duplicated(keep=False) & demographics[patient_column].notna()
    if twice.any():
        first = keys[twice].iloc[0]
        raise DataError(
            f"table {demographics_path} (data.demographics_table) lists patient {first} on rows "
            f"{keys.index[keys == first].tolist()[:10]} ({int(twice.sum())} rows of patients listed more "
            "than once); it must hold one row per patient"
        )
    extra = demographics.drop(columns=[patient_column]).assign(_patient_key=keys)
    return extra[demographics[patient_column].notna()]


def join_demographics(
    table: pd.DataFrame, demographics_path: str | Path, patient_column: str | None, table_path: str | Path
) -> pd.DataFrame:
    """``table`` with the columns of a one-row-per-patient table (MIMIC-IV's ``patients.csv``: ``gender``,
    ``anchor_age``, ...) joined on the patient column (``data.demographics_table``).

    A patient listed twice, a column in both tables, or no patient in common is refused: each would make
    the subgroups silently wrong. Images whose patient has no row keep blanks (the ``unknown`` group) and
    are counted in the prepare report (``join.images_without_demographics``).
    """
    if patient_column is None:
        raise DataError(
            "params: data.demographics_table is joined on the patient column, and none is configured "
            "(data.patient_column: none); set data.patient_column to the column that holds patient ids"
        )
    require_columns(table, {"patient_column": patient_column}, table_path)
    demographics = read_table(demographics_path)
    extra = _one_row_per_patient(demographics, demographics_path, patient_column, table, table_path)
    attrs = dict(table.attrs)
    joined = table.assign(_patient_key=_join_key(table[patient_column])).merge(
        extra, on="_patient_key", how="left", validate="many_to_one", indicator="_demographics"
    )
    without = joined["_demographics"] == "left_only"
    if without.all():
        raise DataError(
            f"no patient of {table_path} (column {patient_column!r}, e.g. {table[patient_column].iloc[0]!r}) "
            f"has a row in {demographics_path} (data.demographics_table, {len(demographics)} rows, e.g. "
            f"{demographics[patient_column].iloc[0]!r}): are they the same release?"
        )
    joined = joined.drop(columns=["_patient_key", "_demographics"])
    joined.index = table.index
    joined.attrs = attrs
    joined.attrs["join"] = {
        **dict(attrs.get("join", {})),
        "demographics_rows": len(demographics),
        "demographics_columns": [c for c in demographics.columns if c != patient_column],
        "images_without_demographics": int(without.sum()),
        "patients_without_demographics": int(table.loc[without.to_numpy(), patient_column].nunique()),
    }
    return joined
