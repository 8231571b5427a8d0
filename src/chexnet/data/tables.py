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
