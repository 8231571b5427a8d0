"""The prepare stage's work: the usable rows of the table, their labels, the seeded subset, the cache.

Rows without an image name, patient or label, of unwanted views, or naming an image twice are rejected,
filtered or merged here (each counted); :mod:`chexnet.data.findings` reads their labels and
:mod:`chexnet.data.decode` their images. Every image is decoded and resized **once** (the prepare
stage) into the cache whose files and read side are :mod:`chexnet.data.cache`'s; later stages never
touch the PNGs again and never import this module. It does not import torch, so that
prepare starts fast and stays small.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.config.data import DataSource
from chexnet.core import io
from chexnet.core.labels import LABELS_FILE, SEPARATOR, LabelList, LabelOptions, write_labels_json
from chexnet.data.cache import IMAGES_FILE, INDEX_FILE, REJECTS_FILE
from chexnet.data.decode import check_cache_fits, decode_into, decode_tasks
from chexnet.data.findings import Labelled, finding_columns, label_rows
from chexnet.data.groups import GROUPS_FILE, group_columns, group_frame
from chexnet.data.presets import registry
from chexnet.data.presets.base import Columns
from chexnet.data.tables import SOURCE_REJECTS, DataError, patients_from_file_names, require_columns

log = logging.getLogger(__name__)


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
    join: dict[str, object] = dataclasses.field(default_factory=dict)  # mimic metadata, demographics
    subgroups: list[str] = dataclasses.field(default_factory=list)  # attributes in groups.parquet

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
        out["subgroups"] = list(self.subgroups)
        return out


def _reject_rows(table: pd.DataFrame, mask: pd.Series, image: str, reason: str, detail: str) -> list[dict]:
    return [
        {"image": str(name), "table_row": int(row), "reason": reason, "detail": detail}
        for name, row in zip(table.loc[mask, image], table.loc[mask, "table_row"], strict=True)
    ]


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def usable_rows(
    table: pd.DataFrame, columns: Columns, table_path: str | Path, views: Sequence[str], preset: str
) -> tuple[pd.DataFrame, list[dict[str, object]], dict[str, object], int]:
    """Rows with an image name, a patient and a label, of the wanted views, each image once; returns
    them (with ``table_row`` and ``patient``), the rejects, the view filter's counts, and the number of
    duplicate rows merged into their image's row."""
    if table.empty:
        raise DataError(f"table {table_path} has no rows (a header only): export it again with its rows")
    needed = {"image_column": columns.image, "label_column": columns.label, "patient_column": columns.patient}
    require_columns(table, {key: name for key, name in needed.items() if name is not None}, table_path)
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
        must_agree += finding_columns(table, columns)
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


def _write_labels(
    path: Path, labelled: Labelled, kept_labels: np.ndarray, no_finding: str, resize: str
) -> None:
    """``labels.json``: the label list and what became of each finding, in the table and in the cache,
    and the rule the images were fitted to a square by."""
    names = labelled.label_list.names
    write_labels_json(
        path,
        labelled.label_list,
        resize=resize,
        no_finding=no_finding,
        positives_in_table={name: int(labelled.positives.get(name, 0)) for name in names},
        positives_in_cache={name: int(np.nansum(kept_labels[:, j])) for j, name in enumerate(names)},
        masked_in_table=labelled.masked,
        uncertain_in_table={name: labelled.uncertain[name] for name in names if name in labelled.uncertain},
        negatives_from_no_finding=labelled.negatives_from_no_finding,
        dropped_rare=labelled.rare,
        ignored=labelled.ignored,
    )


# long: the stage's steps in their order, each one call; the reject bookkeeping spans all of them
# (rows rejected before the subset count against the table, the rest against the selection).
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
    resize: str = "square",
    subgroups: dict[str, str] | None = None,
) -> PrepareReport:
    """Choose the label list, binarise, take the seeded subset, decode each image once into ``out_dir``.

    The label list is chosen on the whole table (after bad rows, the view filter and duplicates are
    removed, before the subset), so a rare finding cannot vanish from validation or test. Bad rows are
    skipped and listed in ``rejects.csv`` by reason; when more than ``max_rejected_fraction`` of the
    selected rows are rejected, the stage fails (after writing the rejects, so they can be inspected).
    """
    options = label_options or LabelOptions()
    attributes = group_columns(table, columns, subgroups or {}, table_path)
    source_rejects, join = (
        list(table.attrs.get(SOURCE_REJECTS, [])),
        dict(table.attrs.get("join", {})),
    )  # e.g. MIMIC metadata rows with blank keys; data.demographics_table's columns
    if columns.label is None:  # a wide table: subgroup and joined demographics columns are not findings
        joined = [str(c) for c in join.get("demographics_columns", [])]  # type: ignore[union-attr]
        columns = dataclasses.replace(columns, metadata=(*columns.metadata, *attributes.values(), *joined))
    rows_in_table = len(table) + len(source_rejects)
    table, rejects, view_counts, merged = usable_rows(table, columns, table_path, views, preset)
    rejects = source_rejects + rejects
    labelled = label_rows(table, columns, options, preset, table_path)

    rejected_in_table = len(rejects)  # rows unusable before the subset (empty name, patient or label)
    n_selected = min(subset, len(table))
    chosen = np.sort(np.random.default_rng(seed).choice(len(table), size=n_selected, replace=False))
    table, labels = table.iloc[chosen].reset_index(drop=True), labelled.labels[chosen]
    names, table_rows = table[columns.image].astype(str).tolist(), table["table_row"].tolist()
    tasks, missing = decode_tasks(names, table_rows, image_root, image_size, resize)
    rejects += missing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_cache_fits(out_dir, len(tasks), image_size)
    with io.atomic_path(out_dir / IMAGES_FILE) as tmp:
        kept, sizes, failed = decode_into(tmp, tasks, image_size, workers)
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
    _write_labels(out_dir / LABELS_FILE, labelled, kept_labels, options.no_finding, resize)
    groups = group_frame(table.iloc[kept].reset_index(drop=True), attributes)
    groups.insert(0, "row", np.arange(len(kept)))
    io.write_parquet(out_dir / GROUPS_FILE, groups)
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
        subgroups=sorted(attributes),
    )


def prepare_source(
    source: DataSource,
    *,
    out_dir: str | Path,
    image_size: int,
    resize: str,
    label_options: LabelOptions,
    subset: int,
    seed: int,
    workers: int,
) -> PrepareReport:
    """:func:`prepare_cache` of a whole :class:`chexnet.config.data.DataSource` (``data:`` or an external
    set): its table read by its preset (joined with its metadata and demographics tables), its columns,
    views, subgroups and rejection limit, so that both callers read a source by the same code. The image
    size, resize rule and label options are the caller's: the training data's own, or the model's."""
    table = registry.read_source(
        source.preset, source.table, source.metadata_table, source.demographics_table, source.patient_column
    )
    return prepare_cache(
        table,
        table_path=source.table,
        image_root=source.images,
        out_dir=out_dir,
        columns=registry.resolve_columns(
            source.preset, source.image_column, source.label_column, source.patient_column
        ),
        image_size=image_size,
        subset=subset,
        seed=seed,
        workers=workers,
        max_rejected_fraction=source.max_rejected_fraction,
        label_options=label_options,
        preset=source.preset,
        views=source.views,
        resize=resize,
        subgroups=dict(source.subgroups),
    )
