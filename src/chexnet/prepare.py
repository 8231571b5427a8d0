"""Reading the user's table and images into the prepared uint8 image cache that training reads.

Every image is decoded and resized **once** here (the prepare stage) into the cache whose files and
read side are :mod:`chexnet.cache`'s; later stages never touch the PNGs again and never import this
module. It does not import torch, so that prepare starts fast and stays small.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from chexnet import io
from chexnet.cache import IMAGES_FILE, INDEX_FILE, REJECTS_FILE
from chexnet.errors import ChexnetError
from chexnet.images import Decoded, decode_one, index_images, resolve
from chexnet.labels import (
    LABELS_FILE,
    SEPARATOR,
    LabelList,
    LabelOptions,
    binarize,
    choose,
    split_findings,
    write_labels_json,
)

log = logging.getLogger(__name__)


class DataError(ChexnetError, ValueError):
    """The input table or image folder cannot be used; the message says which file and what to do."""


# --- the table -----------------------------------------------------------------------------------
NO_PATIENT_COLUMN = "none"  # patient ids come from the image entries (NIH file names, CheXpert paths)
_NIH_NAME = r"^(\d{8})_\d{3}\.png$"  # PPPPPPPP_FFF.png: the patient is the first eight digits
_CHEXPERT_PATH = r"patient(\d+)"  # CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg
MIMIC_PATH_COLUMN = "image_path"  # built by read_source for the mimic preset
CHEXPERT_METADATA = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
MIMIC_KEYS = ("subject_id", "study_id")


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
    patient_pattern: str = _NIH_NAME


COLUMN_PRESETS: dict[str, Columns] = {
    # The seed's gold table (and the demo set, which copies its format).
    "seed": Columns("imagem", "patologia", "paciente_id"),
    # NIH's Data_Entry_2017.csv and Data_Entry_2017_v2020.csv.
    "nih": Columns("Image Index", "Finding Labels", "Patient ID", view="View Position"),
    # CheXpert train.csv / valid.csv: one column per observation, 1.0 / 0.0 / -1.0 (uncertain) / blank.
    "chexpert": Columns(
        "Path", None, None, view="view", metadata=CHEXPERT_METADATA, patient_pattern=_CHEXPERT_PATH
    ),
    # MIMIC-CXR-JPG: the -chexpert (or -negbio) table joined to -metadata on subject_id, study_id.
    "mimic": Columns(
        MIMIC_PATH_COLUMN,
        None,
        "subject_id",
        view="view",
        metadata=(*MIMIC_KEYS, "dicom_id", "ViewPosition", MIMIC_PATH_COLUMN),
    ),
}


def resolve_columns(preset: str, image_column: str, label_column: str, patient_column: str) -> Columns:
    """Column names from the preset, each overridden by its own param when that is set."""
    if preset not in COLUMN_PRESETS:
        raise DataError(f"params: data.preset must be one of {sorted(COLUMN_PRESETS)}, got {preset!r}")
    base = COLUMN_PRESETS[preset]
    if label_column and base.label is None:
        raise DataError(
            f"params: data.label_column does not apply to the wide {preset} table; leave it empty"
        )
    patient = patient_column or base.patient
    return dataclasses.replace(
        base,
        image=image_column or base.image,
        label=label_column or base.label,
        patient=None if patient in (None, NO_PATIENT_COLUMN) else patient,
    )


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


def read_source(preset: str, table_path: str | Path, metadata_table: str | Path = "") -> pd.DataFrame:
    """The table as the preset needs it: MIMIC's label table joined to its metadata (one row an image,
    labels per study) with each image's path built; CheXpert's view made one ``view`` column."""
    table = read_table(table_path)
    if preset == "chexpert":
        require_columns(table, {"image_column": "Path"}, table_path)
        lateral = table.get("Frontal/Lateral", pd.Series("", index=table.index)).astype(str).str.lower()
        frontal_view = table.get("AP/PA", pd.Series("", index=table.index)).fillna("").astype(str).str.upper()
        table["view"] = np.where(lateral == "lateral", "lateral", frontal_view)
    if preset == "mimic":
        if not metadata_table:
            raise DataError(
                "params: the mimic preset needs data.metadata_table (mimic-cxr-2.0.0-metadata.csv.gz) "
                "beside data.table (mimic-cxr-2.0.0-chexpert.csv.gz or -negbio)"
            )
        metadata = read_table(metadata_table)
        require_columns(table, dict(zip(("subject_id", "study_id"), MIMIC_KEYS, strict=True)), table_path)
        require_columns(
            metadata,
            {"metadata_table": "dicom_id", "subject_id": "subject_id", "study_id": "study_id"},
            metadata_table,
        )
        table = _join_mimic(table, metadata, table_path, metadata_table)
        subject = table["subject_id"].astype("int64").astype(str)
        table[MIMIC_PATH_COLUMN] = (
            "files/p"
            + subject.str[:2]
            + "/p"
            + subject
            + "/s"
            + table["study_id"].astype("int64").astype(str)
            + "/"
            + table["dicom_id"].astype(str)
            + ".jpg"
        )
        position = table.get("ViewPosition", pd.Series("", index=table.index)).fillna("").astype(str)
        table["view"] = np.where(position.str.upper().isin(["LATERAL", "LL", "RL"]), "lateral", position)
    return table


SOURCE_REJECTS = "source_rejects"  # table.attrs key: rows read_source could not use, counted by prepare


def _join_mimic(
    labels: pd.DataFrame, metadata: pd.DataFrame, table_path: str | Path, metadata_path: str | Path
) -> pd.DataFrame:
    """One row per image: MIMIC's metadata joined to the per-study labels on (subject_id, study_id).

    A metadata row with a blank key is a counted reject (``blank_key``); a study labelled twice is
    refused with its rows (which label row is right is the user's call); metadata rows whose study has
    no label row are counted in the report (a -negbio or test-only label table covers fewer studies).
    """
    keys = list(MIMIC_KEYS)
    keep = [c for c in ("dicom_id", *MIMIC_KEYS, "ViewPosition") if c in metadata.columns]
    metadata = metadata[keep].reset_index(drop=True)
    blank = metadata[keys].isna().any(axis=1) | (
        metadata[keys].astype(str).apply(lambda c: c.str.strip()) == ""
    ).any(axis=1)
    rejects = [
        {"image": str(row.dicom_id), "table_row": int(i), "reason": "blank_key",
         "detail": f"{metadata_path}: subject_id or study_id is blank"}
        for i, row in metadata[blank].iterrows()
    ]  # fmt: skip
    labelled_twice = labels.duplicated(subset=keys, keep=False)
    if labelled_twice.any():
        at = labels.index[labelled_twice][0]
        subject, study = labels.at[at, "subject_id"], labels.at[at, "study_id"]
        rows = labels.index[(labels["subject_id"] == subject) & (labels["study_id"] == study)].tolist()
        raise DataError(
            f"table {table_path}: study subject_id {subject}, study_id {study} is "
            f"labelled on rows {rows[:10]} ({int(labelled_twice.sum())} rows of studies labelled more than "
            "once); a study has one label row: remove the duplicates"
        )
    metadata = metadata[~blank]
    for key in keys:  # float (a NaN once there) or text ids against ints: join on the same type
        metadata[key] = pd.to_numeric(metadata[key], errors="coerce").astype("Int64")
        labels = labels.assign(**{key: pd.to_numeric(labels[key], errors="coerce").astype("Int64")})
    joined = metadata.merge(labels, on=keys, how="inner", validate="many_to_one")
    if joined.empty:
        raise DataError(
            f"no row of {metadata_path} ({len(metadata)} rows) matches a study of {table_path} "
            f"({len(labels)} rows) on subject_id and study_id: are they the same release?"
        )
    joined.attrs[SOURCE_REJECTS] = rejects
    joined.attrs["join"] = {"metadata_rows": len(metadata) + len(rejects),
                            "metadata_rows_without_labels": int(len(metadata) - len(joined))}  # fmt: skip
    return joined


def require_columns(table: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Fail with the param name, the missing column and the columns present."""
    for param, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"table {path} has no column {column!r} (params: data.{param}); "
                f"columns present: {', '.join(map(repr, table.columns))}"
            )


def patients_from_file_names(names: pd.Series, table_path: str | Path, pattern: str = _NIH_NAME) -> pd.Series:
    """Patient ids from the image entries: NIH file names ``PPPPPPPP_FFF.png``, CheXpert's ``patientNNNNN``
    folder; an entry that does not match needs a patient column."""
    compiled = re.compile(pattern)

    def find(entry: str) -> re.Match[str] | None:  # NIH: the file name; CheXpert: anywhere in the path
        return compiled.search(Path(entry).name if pattern == _NIH_NAME else entry)

    matches = names.astype(str).map(find)
    bad = names[matches.isna()]
    if len(bad):
        raise DataError(
            f"table {table_path}: no patient column is configured and {len(bad)} image entries do not "
            f"carry a patient id (pattern {pattern!r}, e.g. {bad.iloc[0]!r}); a patient-level split needs "
            "patient ids: set data.patient_column to the column that holds them"
        )
    return matches.map(lambda m: str(int(m.group(1))))


def long_findings(
    cells: pd.Series, options: LabelOptions
) -> tuple[list[list[str]], dict[str, int], dict[str, int]]:
    """``|``-separated cells → each row's findings, positives per finding, and ignored findings' counts."""
    ignored = set(options.ignore)
    rows, dropped = [], Counter()
    for cell in cells:
        tokens = [token.strip() for token in str(cell).split(SEPARATOR)]
        dropped.update(token for token in tokens if token in ignored)  # before anything else, aliases too
        kept = SEPARATOR.join(token for token in tokens if token not in ignored)
        rows.append(sorted(set(split_findings(kept, no_finding=options.no_finding, aliases=options.aliases))))
    return rows, dict(Counter(f for row in rows for f in row)), dict(dropped)


def wide_findings(
    table: pd.DataFrame, columns: Columns, options: LabelOptions, table_path: str | Path
) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, int]]:
    """One column per finding (1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned) → per
    finding a float vector with NaN where the label is masked, under the uncertainty and blank policies.

    Returns the vectors, positives per finding and uncertain entries per finding (before the policy).
    """
    observed = _finding_columns(table, columns)
    _check_uncertain_keys(options, [options.aliases.get(str(c), str(c)) for c in observed], table_path)
    vectors: dict[str, np.ndarray] = {}
    uncertain_counts: dict[str, int] = {}
    source_of: dict[str, str] = {}
    for column in observed:
        if str(column) in options.ignore:  # the table's own name, before aliases (docs/data.md)
            continue
        name = options.aliases.get(str(column), str(column))
        if name == options.no_finding:
            continue
        if name in source_of:
            raise DataError(
                f"table {table_path}: columns {source_of[name]!r} and {column!r} both mean {name!r} "
                "(data.aliases); map only one of them"
            )
        source_of[name] = str(column)
        raw = table[column]
        values = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & (values.isna() | ~values.isin([1.0, 0.0, -1.0]))
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            raise DataError(
                f"table {table_path}, column {column!r}, row {int(table['table_row'].iloc[first])}: "
                f"{raw.iloc[first]!r} is not 1.0, 0.0, -1.0 or blank ({int(bad.sum())} such cells). If it "
                "is not a finding, list it in data.ignore_findings"
            )
        vector = values.to_numpy(dtype=np.float64, copy=True)
        uncertain = vector == -1.0
        policy = options.uncertain_policy(name)
        vector[uncertain] = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[policy]
        vector[np.isnan(values.to_numpy(dtype=np.float64))] = 0.0 if options.blank == "negative" else np.nan
        vectors[name] = vector
        uncertain_counts[name] = int(uncertain.sum())
    positives = {name: int((v == 1.0).sum()) for name, v in vectors.items()}
    return vectors, positives, uncertain_counts


def _check_uncertain_keys(options: LabelOptions, findings: list[str], table_path: str | Path) -> None:
    """A per-finding ``data.uncertain`` key that names no finding of the table is a typo, never a no-op."""
    if isinstance(options.uncertain, str):
        return
    unknown = sorted(set(options.uncertain) - set(findings) - {"default"})
    if unknown:
        raise DataError(
            f"params: data.uncertain names {unknown}, which table {table_path} does not hold (after "
            f"data.aliases); its findings: {', '.join(sorted(findings))}. Fix the spelling or use 'default'"
        )


def _check_no_finding_token(options: LabelOptions, positives: dict[str, int], table_path: str | Path) -> None:
    """A finding spelt like "no finding" (or "normal") beside another ``data.no_finding`` token would
    make healthy images a class of their own: refused, naming the token to set."""
    lookalikes = [
        name for name in positives if name.lower().replace("_", " ").strip() in ("no finding", "normal")
    ]
    lookalikes = [name for name in lookalikes if name != options.no_finding]
    if lookalikes:
        raise DataError(
            f"table {table_path} holds {lookalikes} as findings, while data.no_finding is "
            f"{options.no_finding!r}: set data.no_finding to the table's token (e.g. {lookalikes[0]!r}), "
            "or it becomes a class"
        )


def _check_ignored_exist(options: LabelOptions, seen: set[str], table_path: str | Path) -> None:
    """Every name in ``data.ignore_findings`` must be one the table holds (spelt as in the table)."""
    unknown = sorted(set(options.ignore) - seen)
    if unknown:
        raise DataError(
            f"params: data.ignore_findings names {unknown}, which table {table_path} does not hold; it "
            "matches the table's own spelling (before data.aliases): fix the spelling or remove the entry"
        )


# --- the prepared cache ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareReport:
    rows_in_table: int
    rows_selected: int
    images_written: int
    duplicate_rows_merged: int  # rows naming an image already seen, merged into its row
    rejected: dict[str, int]
    labels: LabelList | None = None
    labels_dropped: dict[str, int] = dataclasses.field(default_factory=dict)  # too rare: positives
    findings_ignored: dict[str, int] = dataclasses.field(default_factory=dict)  # data.ignore_findings
    views: dict[str, object] = dataclasses.field(default_factory=dict)
    join: dict[str, int] = dataclasses.field(default_factory=dict)  # mimic: metadata rows and unmatched

    @property
    def rejected_total(self) -> int:
        return int(sum(self.rejected.values()))

    def as_dict(self) -> dict[str, object]:
        """``metrics/prepare.json``: counts only; the label names and per-finding counts are in
        ``data/prepared/labels.json``."""
        out: dict[str, object] = {
            "rows_in_table": self.rows_in_table,
            "rows_selected": self.rows_selected,
            "images_written": self.images_written,
            "duplicate_rows_merged": self.duplicate_rows_merged,
            "rejected": dict(self.rejected),
            "rejected_total": self.rejected_total,
        }
        if self.labels is not None:
            out["labels"] = {
                "source": self.labels.source,
                "count": len(self.labels),
                "dropped_rare": dict(self.labels_dropped),
                "ignored": dict(self.findings_ignored),
            }
        if self.views:
            out["views"] = self.views
        if self.join:
            out["join"] = self.join
        return out


class _Uint8StackWriter:
    """Writes an ``N × S × S`` uint8 ``.npy`` file row by row, with plain sequential writes.

    Plain writes (not a memory map) keep the process's resident memory flat however large N is. The
    header is written for the most rows there can be and rewritten, same length, for the rows kept.
    """

    def __init__(self, path: Path, max_rows: int, size: int):
        self.path, self.size, self.rows = path, size, 0
        self.header_length = len(self._header(max_rows))
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(self._header(max_rows))

    def _header(self, rows: int, length: int | None = None) -> bytes:
        text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, {self.size}, {self.size}), }}"
        if length is None:  # pad so that the data starts 64-byte aligned, as numpy writes it
            length = -(-(10 + len(text) + 1) // 64) * 64
        text = text.ljust(length - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

    def append(self, image: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self.rows += 1

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header(self.rows, self.header_length))
        self.file.close()


def decode_all(tasks: list[tuple[int, str, int]], workers: int) -> Iterator[Decoded]:
    """Decode with ``workers`` threads (1: in this one), yielding results in task order.

    Threads, not processes: Pillow releases the GIL while it inflates PNG data and resizes, so threads
    scale with cores (measured: 0.94 of the ideal on 2 cores, benchmarks/prepare_throughput.py)
    without process start-up, pickling or a second copy of the interpreter. A window of at most a few
    hundred tasks is submitted ahead of the one being taken, so memory stays bounded whatever N is.
    On Ctrl-C or SIGTERM (or any error) the queued tasks are cancelled and only the images being decoded
    finish: no worker waits on a consumer that has gone (a ``multiprocessing.pool`` fed through a
    semaphore deadlocked there).
    """
    if workers <= 1 or len(tasks) < 2:
        yield from map(decode_one, tasks)
        return
    window = workers * 32
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        remaining = iter(tasks)
        pending = deque(pool.submit(decode_one, task) for task in islice(remaining, window))
        while pending:
            result = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(decode_one, following))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_cache_fits(out_dir: Path, images: int, image_size: int) -> None:
    """Refuse, before decoding, a cache that cannot fit on the disk (``image_size: 4096`` makes 16 MB an
    image: 335 GB at the default subset), and say the size of a large one."""
    import shutil

    need = images * image_size * image_size
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise DataError(
            f"the image cache for {images:,} images at image_size {image_size} needs {need / 1e9:,.1f} GB in "
            f"{out_dir}, which has {free / 1e9:,.1f} GB free; lower image_size or subset, or free space"
        )
    if need > 20e9:
        log.warning("the image cache will take %.1f GB (%d images at %d px)", need / 1e9, images, image_size)


def default_workers(requested: int) -> int:
    """0 means every core this process may use."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _reject_rows(table: pd.DataFrame, mask: pd.Series, image: str, reason: str, detail: str) -> list[dict]:
    return [
        {"image": str(name), "table_row": int(row), "reason": reason, "detail": detail}
        for name, row in zip(table.loc[mask, image], table.loc[mask, "table_row"], strict=True)
    ]


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


@dataclasses.dataclass
class _Labelled:
    """The label list chosen on the whole table, and every row's labels in its order (NaN: masked)."""

    label_list: LabelList
    labels: np.ndarray
    positives: dict[str, int]
    rare: list[str]
    ignored: dict[str, int]
    masked: dict[str, int]
    uncertain: dict[str, int]


def _usable_rows(
    table: pd.DataFrame, columns: Columns, table_path: str | Path, views: Sequence[str], preset: str
) -> tuple[pd.DataFrame, list[dict[str, object]], dict[str, object], int]:
    """Rows with an image name, a patient and a label, of the wanted views, each image once; returns
    them (with ``table_row`` and ``patient``), the rejects, the view filter's counts, and the number of
    duplicate rows merged into their image's row."""
    if table.empty:
        raise DataError(f"table {table_path} has no rows (a header only): export it again with its rows")
    table = table.reset_index(drop=True)
    table["table_row"] = np.arange(len(table))
    empty_image = _blank(table[columns.image])
    rejects = _reject_rows(
        table, empty_image, columns.image, "empty_image_name", f"{columns.image!r} is empty"
    )
    table = table[~empty_image]
    if columns.patient is None:
        table["patient"] = patients_from_file_names(table[columns.image], table_path, columns.patient_pattern)
    else:
        no_patient = _blank(table[columns.patient])
        detail = f"{columns.patient!r} is empty: a patient-level split cannot place it"
        rejects += _reject_rows(table, no_patient, columns.image, "empty_patient", detail)
        table = table[~no_patient].copy()
        table["patient"] = table[columns.patient].astype(str).str.strip()
    if columns.label is not None:
        empty = _blank(table[columns.label])
        rejects += _reject_rows(table, empty, columns.image, "empty_label", f"{columns.label!r} is empty")
        table = table[~empty]
    table, view_counts = _keep_views(table, columns, table_path, views, preset)
    if table.empty:
        reasons = Counter(r["reason"] for r in rejects)
        raise DataError(
            f"table {table_path} has no usable row: {len(rejects)} rejected ({dict(reasons) or 'none'}); "
            "see the table's columns and data.image_column / data.patient_column / data.label_column"
        )
    merged_table, merged = _merge_duplicates(table, columns, table_path)
    return merged_table.reset_index(drop=True), rejects, view_counts, merged


def _finding_columns(table: pd.DataFrame, columns: Columns) -> list[str]:
    """A wide table's finding columns: every column that is not the image, patient, view or metadata."""
    internal = {"table_row", "patient", "view", columns.image, *(columns.metadata)}
    return [c for c in table.columns if c not in internal]


def _merge_duplicates(
    table: pd.DataFrame, columns: Columns, table_path: str | Path
) -> tuple[pd.DataFrame, int]:
    """Rows naming the same image become one: a long table's findings are united (an export with one
    row per image and finding is common), a wide table's rows must agree cell for cell. Rows of one
    image that disagree on the patient or the view, or a wide table's labels, are refused with the rows
    named: which one is right is the user's call. Returns the table and how many rows were merged away."""
    repeated = table.duplicated(subset=[columns.image], keep=False)
    if not repeated.any():
        return table, 0
    rows = table[repeated]
    must_agree = ["patient", *([columns.view] if columns.view in table.columns else [])]
    if columns.label is None:
        must_agree += _finding_columns(table, columns)
    spread = rows.groupby(columns.image, sort=False)[must_agree].nunique(dropna=False)
    disagree = spread[(spread > 1).any(axis=1)]
    if len(disagree):
        image = disagree.index[0]
        differ = [c for c in must_agree if disagree.loc[image, c] > 1]
        at = rows.loc[rows[columns.image] == image, "table_row"].tolist()
        raise DataError(
            f"table {table_path}: image {image!r} is on rows {at[:10]} (table rows, from 0) with "
            f"different {', '.join(map(repr, differ))} ({len(disagree)} image(s) like this); one image has "
            "one patient, view and label set: fix or remove the conflicting rows"
        )
    first = rows.drop_duplicates(subset=[columns.image], keep="first").copy()
    if columns.label is not None:
        united = rows.groupby(columns.image, sort=False)[columns.label].agg(
            lambda cells: SEPARATOR.join(map(str, cells))
        )
        first[columns.label] = first[columns.image].map(united)
    merged = pd.concat([table[~repeated], first]).sort_values("table_row", kind="stable")
    return merged, int(repeated.sum() - len(first))


def _keep_views(
    table: pd.DataFrame, columns: Columns, table_path: str | Path, views: Sequence[str], preset: str
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Only the rows of the wanted views (``data.views``; empty: all), with what was kept and dropped."""
    if not views:
        return table, {}
    if columns.view is None or columns.view not in table.columns:
        raise DataError(
            f"params: data.views is set but table {table_path} has no view column for the "
            f"{preset!r} preset; leave data.views empty"
        )
    view = table[columns.view].fillna("").astype(str)
    view = view.where(view == "lateral", view.str.upper())
    wanted = {v if v == "lateral" else v.upper() for v in views}
    keep = view.isin(wanted)
    if not keep.any():
        present = {str(k): int(v) for k, v in view.value_counts().items()}
        raise DataError(
            f"params: data.views {sorted(wanted)} matches no row of {table_path}; its rows have the views "
            f"{present or 'none'}: choose among those, or leave data.views empty"
        )
    counts = {
        "kept": sorted(wanted),
        "rows_kept": int(keep.sum()),
        "rows_dropped": int((~keep).sum()),
        "dropped_by_view": {str(k): int(v) for k, v in view[~keep].value_counts().items()},
    }
    return table[keep], counts


def _label_rows(
    table: pd.DataFrame, columns: Columns, options: LabelOptions, preset: str, table_path: str | Path
) -> _Labelled:
    """Choose the label list on the whole table (long: ``|``-separated cells; wide: one column per
    finding) and binarise every row in its order."""
    masked: dict[str, int] = {}
    uncertain: dict[str, int] = {}
    if columns.label is not None:
        finding_rows, positives, ignored = long_findings(table[columns.label], options)
        _check_ignored_exist(options, set(ignored), table_path)
        label_list, rare = choose(
            positives, options, preset, where=f"column {columns.label!r} of {table_path}"
        )
        labels = binarize(finding_rows, label_list).astype(np.float64)
    else:
        vectors, positives, uncertain = wide_findings(table, columns, options, table_path)
        _check_ignored_exist(options, {str(c) for c in table.columns}, table_path)
        ignored = {name: int((table[name] == 1.0).sum()) for name in options.ignore if name in table.columns}
        label_list, rare = choose(positives, options, preset, where=f"table {table_path}")
        labels = np.stack([vectors[name] for name in label_list.names], axis=1)
        masked = {name: int(np.isnan(vectors[name]).sum()) for name in label_list.names}
    _check_no_finding_token(options, positives, table_path)
    if rare:
        log.warning("dropped findings with fewer than %d positives: %s", options.min_positives, rare)
    return _Labelled(label_list, labels, positives, rare, ignored, masked, uncertain)


def _decode_tasks(
    names: list[str], table_rows: list[int], image_root: str | Path, image_size: int
) -> tuple[list[tuple[int, str, int]], list[dict[str, object]]]:
    """Where each image file is (``(position, path, size)`` tasks), and the rows whose file is not found
    or would leave the image folder."""
    root = Path(image_root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: set data.images in params.yaml")
    # Bare file names are looked up in a recursive index (NIH's images_001/ ... folders); entries with
    # folders (CheXpert, MIMIC) are joined to the root, so equal file names in other folders are no bother.
    by_name = index_images(root) if any(len(Path(n).parts) == 1 for n in names) else {}
    tasks, rejects = [], []
    for position, name in enumerate(names):
        path, reason = resolve(root, name, by_name)
        if path is None:
            where = (
                "absolute or outside the image folder"
                if reason == "unsafe_path"
                else f"not found under {root}"
            )
            rejects.append(
                {"image": name, "table_row": int(table_rows[position]), "reason": reason, "detail": where}
            )
        else:
            tasks.append((position, str(path), image_size))
    return tasks, rejects


def _decode_into(
    images_file: Path, tasks: list[tuple[int, str, int]], image_size: int, workers: int
) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, str, str]]]:
    """Decode every task once into the uint8 stack at ``images_file`` (already a temporary path);
    returns the positions written, their original sizes, and ``(position, reason, detail)`` failures."""
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    failed: list[tuple[int, str, str]] = []
    n_workers = default_workers(workers)
    log.info("decoding %d images with %d thread(s) into %s", len(tasks), n_workers, images_file)
    writer = _Uint8StackWriter(images_file, len(tasks), image_size)
    try:
        for result in tqdm(decode_all(tasks, n_workers), total=len(tasks), desc="prepare", unit="img",
                           smoothing=0.05):  # fmt: skip
            if result.pixels is None:
                failed.append((result.position, result.reason, result.detail))
                continue
            writer.append(result.pixels)
            kept.append(result.position)
            sizes.append(result.original_size)
    finally:
        writer.close()
    return kept, sizes, failed


def _check_reject_shares(
    shares: dict[str, tuple[int, int]], limit: float, rejected: dict, where: Path
) -> None:
    """Stop when more than ``data.max_rejected_fraction`` of a group of rows was rejected."""
    for what, (count, total) in shares.items():
        if total and count / total > limit:
            raise DataError(
                f"{count} of {total} {what} ({count / total:.1%}) were rejected, more than "
                f"data.max_rejected_fraction = {limit:g}: {rejected}. See {where} for each row and why"
            )


def _index_frame(
    names: list[str], patients: np.ndarray, kept: list[int], sizes: list[tuple[int, int]],
    labels: np.ndarray, label_list: LabelList,
) -> pd.DataFrame:  # fmt: skip
    """``index.parquet``: one row per cached image, then one column per finding (nullable where masked)."""
    index = pd.DataFrame(
        {
            "row": np.arange(len(kept)),
            "image": np.asarray(names, dtype=object)[kept],
            "patient": patients[kept],
            "width": np.array([w for w, _ in sizes], dtype=np.int32),
            "height": np.array([h for _, h in sizes], dtype=np.int32),
        }
    )
    any_masked = bool(np.isnan(labels).any())
    for j, label in enumerate(label_list.names):
        column = labels[:, j]
        if any_masked:  # nullable: null where the label is masked
            index[label] = pd.array(np.where(np.isnan(column), pd.NA, column), dtype="UInt8")
        else:
            index[label] = column.astype(np.uint8)
    return index


def _write_labels(path: Path, labelled: _Labelled, kept_labels: np.ndarray, no_finding: str) -> None:
    """``labels.json``: the label list and what became of each finding, in the table and in the cache."""
    names = labelled.label_list.names
    write_labels_json(
        path,
        labelled.label_list,
        no_finding=no_finding,
        positives_in_table={name: int(labelled.positives.get(name, 0)) for name in names},
        positives_in_cache={name: int(np.nansum(kept_labels[:, j])) for j, name in enumerate(names)},
        masked_in_table=labelled.masked,
        uncertain_in_table={name: labelled.uncertain[name] for name in names if name in labelled.uncertain},
        dropped_rare=labelled.rare,
        ignored=labelled.ignored,
    )


def prepare_cache(
    table: pd.DataFrame,
    *,
    table_path: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    columns: Columns,
    image_size: int,
    subset: int,
    seed: int,
    workers: int = 1,
    max_rejected_fraction: float = 1.0,
    label_options: LabelOptions | None = None,
    preset: str = "seed",
    views: tuple[str, ...] | list[str] = (),
) -> PrepareReport:
    """Choose the label list, binarise, take the seeded subset, decode each image once into ``out_dir``.

    The label list is chosen on the whole table (after bad rows, the view filter and duplicates are
    removed, before the subset), so a rare finding cannot vanish from validation or test. Bad rows are
    skipped and listed in ``rejects.csv`` by reason; when more than ``max_rejected_fraction`` of the
    selected rows are rejected, the stage fails (after writing the rejects, so they can be inspected).
    """
    options = label_options or LabelOptions()
    needed = {"image_column": columns.image, "label_column": columns.label, "patient_column": columns.patient}
    require_columns(table, {key: name for key, name in needed.items() if name is not None}, table_path)
    source_rejects, join = (
        list(table.attrs.get(SOURCE_REJECTS, [])),
        dict(table.attrs.get("join", {})),
    )  # e.g. MIMIC metadata rows with blank keys
    rows_in_table = len(table) + len(source_rejects)
    table, rejects, view_counts, merged = _usable_rows(table, columns, table_path, views, preset)
    rejects = source_rejects + rejects
    labelled = _label_rows(table, columns, options, preset, table_path)

    rejected_in_table = len(rejects)  # rows unusable before the subset (empty name, patient or label)
    n_selected = min(subset, len(table))
    chosen = np.sort(np.random.default_rng(seed).choice(len(table), size=n_selected, replace=False))
    table, labels = table.iloc[chosen].reset_index(drop=True), labelled.labels[chosen]
    names, table_rows = table[columns.image].astype(str).tolist(), table["table_row"].tolist()
    tasks, missing = _decode_tasks(names, table_rows, image_root, image_size)
    rejects += missing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_cache_fits(out_dir, len(tasks), image_size)
    with io.atomic_path(out_dir / IMAGES_FILE) as tmp:
        kept, sizes, failed = _decode_into(tmp, tasks, image_size, workers)
        rejects += [{"image": names[position], "table_row": int(table_rows[position]), "reason": reason,
                     "detail": detail} for position, reason, detail in failed]  # fmt: skip
        reject_frame = pd.DataFrame(rejects, columns=["image", "table_row", "reason", "detail"])
        io.write_csv(out_dir / REJECTS_FILE, reject_frame)
        rejected = {str(k): int(v) for k, v in reject_frame["reason"].value_counts().items()}
        shares = {
            "selected images": (len(reject_frame) - rejected_in_table, n_selected),
            "table rows with an empty image name, patient or label": (rejected_in_table, rows_in_table),
        }
        _check_reject_shares(shares, max_rejected_fraction, rejected, out_dir / REJECTS_FILE)

    kept_labels, label_list = labels[kept], labelled.label_list
    patients = table["patient"].to_numpy()
    io.write_parquet(
        out_dir / INDEX_FILE, _index_frame(names, patients, kept, sizes, kept_labels, label_list)
    )
    _write_labels(out_dir / LABELS_FILE, labelled, kept_labels, options.no_finding)
    return PrepareReport(
        rows_in_table=rows_in_table,
        rows_selected=n_selected,
        images_written=len(kept),
        duplicate_rows_merged=merged,
        rejected=rejected,
        labels=label_list,
        labels_dropped=labelled.rare,
        findings_ignored=labelled.ignored,
        views=view_counts,
        join=join,
    )
