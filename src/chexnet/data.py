"""Reading the user's table and images into the prepared uint8 image cache that training reads.

The seed decodes a 1024×1024 PNG and resizes it for every sample of every epoch. Here every image is
decoded and resized **once** by the prepare stage into a single ``N × S × S`` uint8 array on disk
(``images.npy``, read back by memory map) beside an index table (``index.parquet``: row → image name,
patient, 14-label vector). Later stages never touch the PNGs again.

This module does not import torch, so that prepare starts fast and stays small; feeding the cache
to a model is :mod:`chexnet.dataset`'s job.

Files written by prepare (the contract with later stages):

- ``images.npy``: NumPy ``.npy``, dtype uint8, shape ``(N, S, S)``, one 8-bit grayscale image a row.
- ``index.parquet``: columns ``row`` (int, row in images.npy), ``image`` (file name as in the table),
  ``patient`` (string), ``width`` and ``height`` (the original image's pixels, which bounding boxes
  refer to), then one uint8 column per label in ``LABELS`` order.
- ``rejects.csv``: rows that were skipped: ``image``, ``table_row``, ``reason``, ``detail``.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from chexnet import io
from chexnet.errors import ChexnetError
from chexnet.images import Decoded, decode_one, index_images, resolve
from chexnet.labels import LABELS, binarize

log = logging.getLogger(__name__)

IMAGES_FILE, INDEX_FILE, REJECTS_FILE = "images.npy", "index.parquet", "rejects.csv"


class DataError(ChexnetError, ValueError):
    """The input table or image folder cannot be used; the message says which file and what to do."""


# --- the table -----------------------------------------------------------------------------------
COLUMN_PRESETS: dict[str, dict[str, str]] = {
    # The seed's gold table (and the demo set, which copies its format).
    "seed": {"image_column": "imagem", "label_column": "patologia", "patient_column": "paciente_id"},
    # NIH's Data_Entry_2017.csv and Data_Entry_2017_v2020.csv.
    "nih": {"image_column": "Image Index", "label_column": "Finding Labels", "patient_column": "Patient ID"},
}
NO_PATIENT_COLUMN = "none"  # patient ids come from NIH file names PPPPPPPP_FFF.png
_NIH_NAME = re.compile(r"^(\d{8})_\d{3}\.png$")


@dataclass(frozen=True)
class Columns:
    image: str
    label: str
    patient: str | None  # None: derive from NIH file names


def resolve_columns(preset: str, image_column: str, label_column: str, patient_column: str) -> Columns:
    """Column names from the preset, each overridden by its own param when that is set."""
    if preset not in COLUMN_PRESETS:
        raise DataError(f"params: data.preset must be one of {sorted(COLUMN_PRESETS)}, got {preset!r}")
    base = COLUMN_PRESETS[preset]
    patient = patient_column or base["patient_column"]
    return Columns(
        image=image_column or base["image_column"],
        label=label_column or base["label_column"],
        patient=None if patient == NO_PATIENT_COLUMN else patient,
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
    if suffixes.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if ".csv" in suffixes:
        table = pd.read_csv(path)
        empty_unnamed = [c for c in table.columns if str(c).startswith("Unnamed:") and table[c].isna().all()]
        return table.drop(columns=empty_unnamed)
    raise DataError(f"table {path}: unknown format {path.suffix!r}; use .parquet or .csv")


def require_columns(table: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Fail with the param name, the missing column and the columns present."""
    for param, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"table {path} has no column {column!r} (params: data.{param}); "
                f"columns present: {', '.join(map(repr, table.columns))}"
            )


def patients_from_file_names(names: pd.Series, table_path: str | Path) -> pd.Series:
    """NIH file names ``PPPPPPPP_FFF.png`` carry the patient id; anything else needs a patient column."""
    matches = names.astype(str).map(lambda name: _NIH_NAME.match(Path(name).name))
    bad = names[matches.isna()]
    if len(bad):
        raise DataError(
            f"table {table_path}: no patient column is configured (data.patient_column: none) and "
            f"{len(bad)} image names are not NIH-style PPPPPPPP_FFF.png (e.g. {bad.iloc[0]!r}); "
            "a patient-level split needs patient ids: set data.patient_column to the column that holds them"
        )
    return matches.map(lambda m: str(int(m.group(1))))


# --- the prepared cache ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareReport:
    rows_in_table: int
    rows_selected: int
    images_written: int
    duplicates_dropped: int
    rejected: dict[str, int]

    @property
    def rejected_total(self) -> int:
        return int(sum(self.rejected.values()))

    def as_dict(self) -> dict[str, object]:
        return {
            "rows_in_table": self.rows_in_table,
            "rows_selected": self.rows_selected,
            "images_written": self.images_written,
            "duplicates_dropped": self.duplicates_dropped,
            "rejected": dict(self.rejected),
            "rejected_total": self.rejected_total,
        }


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


def _bounded(tasks: Iterator[object], slots: threading.BoundedSemaphore) -> Iterator[object]:
    """Hand tasks to a pool no faster than results are taken (the pool would read them all at once)."""
    for task in tasks:
        slots.acquire()
        yield task


def decode_all(tasks: list[tuple[int, str, int]], workers: int) -> Iterator[Decoded]:
    """Decode with ``workers`` threads (1: in this one), yielding results in task order.

    Threads, not processes: Pillow releases the GIL while it inflates PNG data and resizes, so threads
    scale with cores (measured: 0.94 of the ideal on 2 cores, benchmarks/prepare_throughput.py)
    without process start-up, pickling or a second copy of the interpreter. At most a few hundred
    decoded images are in flight, so memory stays bounded whatever N is.
    """
    if workers <= 1 or len(tasks) < 2:
        yield from map(decode_one, tasks)
        return
    chunk = 4
    slots = threading.BoundedSemaphore(workers * chunk * 8)
    with ThreadPool(workers) as pool:
        for result in pool.imap(decode_one, _bounded(iter(tasks), slots), chunksize=chunk):
            slots.release()
            yield result


def default_workers(requested: int) -> int:
    """0 means every core this process may use."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
) -> PrepareReport:
    """Binarise labels, take the seeded subset, decode each image once into the cache under ``out_dir``.

    Bad rows are skipped and listed in ``rejects.csv`` by reason; when more than
    ``max_rejected_fraction`` of the selected rows are rejected, the stage fails (after writing the
    rejects, so they can be inspected).
    """
    needed = {"image_column": columns.image, "label_column": columns.label}
    if columns.patient is not None:
        needed["patient_column"] = columns.patient
    require_columns(table, needed, table_path)
    rows_in_table = len(table)
    table = table.reset_index(drop=True)
    table["table_row"] = np.arange(rows_in_table)
    table["patient"] = (
        patients_from_file_names(table[columns.image], table_path)
        if columns.patient is None
        else table[columns.patient].astype(str)
    )
    rejects: list[dict[str, object]] = []

    empty = table[columns.label].isna() | (table[columns.label].astype(str).str.strip() == "")
    rejects += [
        {
            "image": str(name),
            "table_row": int(row),
            "reason": "empty_label",
            "detail": f"{columns.label!r} is empty",
        }
        for name, row in zip(table.loc[empty, columns.image], table.loc[empty, "table_row"], strict=True)
    ]
    table = table[~empty]
    duplicated = table.duplicated(subset=[columns.image], keep="first")
    duplicates_dropped = int(duplicated.sum())
    table = table[~duplicated]
    labels = binarize(table[columns.label].astype(str), column=columns.label)

    n_selected = min(subset, len(table))
    chosen = np.sort(np.random.default_rng(seed).choice(len(table), size=n_selected, replace=False))
    table, labels = table.iloc[chosen].reset_index(drop=True), labels[chosen]

    root = Path(image_root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: set data.images in params.yaml")
    by_name = index_images(root)
    names = table[columns.image].astype(str).tolist()
    table_rows = table["table_row"].tolist()
    tasks = []
    for position, name in enumerate(names):
        path, reason = resolve(root, name, by_name)
        if path is None:
            detail = (
                "absolute or outside the image folder"
                if reason == "unsafe_path"
                else f"not found under {root}"
            )
            rejects.append(
                {"image": name, "table_row": int(table_rows[position]), "reason": reason, "detail": detail}
            )
        else:
            tasks.append((position, str(path), image_size))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    n_workers = default_workers(workers)
    log.info("decoding %d images with %d thread(s) into %s", len(tasks), n_workers, out_dir / IMAGES_FILE)
    with io.atomic_path(out_dir / IMAGES_FILE) as tmp:
        writer = _Uint8StackWriter(tmp, len(tasks), image_size)
        try:
            results = decode_all(tasks, n_workers)
            for result in tqdm(results, total=len(tasks), desc="prepare", unit="img", smoothing=0.05):
                if result.pixels is None:
                    rejects.append(
                        {
                            "image": names[result.position],
                            "table_row": int(table_rows[result.position]),
                            "reason": result.reason,
                            "detail": result.detail,
                        }
                    )
                    continue
                writer.append(result.pixels)
                kept.append(result.position)
                sizes.append(result.original_size)
        finally:
            writer.close()

        reject_frame = pd.DataFrame(rejects, columns=["image", "table_row", "reason", "detail"])
        io.write_csv(out_dir / REJECTS_FILE, reject_frame)
        report = PrepareReport(
            rows_in_table=rows_in_table,
            rows_selected=n_selected,
            images_written=len(kept),
            duplicates_dropped=duplicates_dropped,
            rejected={str(k): int(v) for k, v in reject_frame["reason"].value_counts().items()},
        )
        empty_labels = int(empty.sum())
        shares = {
            "selected images": (len(reject_frame) - empty_labels, n_selected),
            "table rows with an empty label": (empty_labels, rows_in_table),
        }
        for what, (count, total) in shares.items():
            if total and count / total > max_rejected_fraction:
                raise DataError(
                    f"{count} of {total} {what} ({count / total:.1%}) were rejected, more than "
                    f"data.max_rejected_fraction = {max_rejected_fraction:g}: {report.rejected}. "
                    f"See {out_dir / REJECTS_FILE} for each row and why"
                )

    index = pd.DataFrame(
        {
            "row": np.arange(len(kept)),
            "image": np.asarray(names, dtype=object)[kept],
            "patient": table["patient"].to_numpy()[kept],
            "width": np.array([w for w, _ in sizes], dtype=np.int32),
            "height": np.array([h for _, h in sizes], dtype=np.int32),
        }
    )
    for j, label in enumerate(LABELS):
        index[label] = labels[kept, j]
    io.write_parquet(out_dir / INDEX_FILE, index)
    return report


def load_index(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(prepared_dir) / INDEX_FILE)


def label_matrix(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(LABELS)].to_numpy(dtype=np.float32)
