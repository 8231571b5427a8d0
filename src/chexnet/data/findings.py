"""Findings from a table: ``|``-separated cells or one column per finding, under the label params.

The label list is chosen on the whole table here (:func:`label_rows`) and every row binarised in its
order; a wide table's uncertain and blank cells follow ``data.uncertain`` and ``data.blank`` (NaN:
masked). Names the table holds that the params misspell are refused, never ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import SEPARATOR, LabelList, LabelOptions, binarize, choose, split_findings
from chexnet.data.presets.base import Columns
from chexnet.data.tables import DataError

log = logging.getLogger(__name__)


def long_findings(
    cells: pd.Series, options: LabelOptions, table_path: str | Path = "the table"
) -> tuple[list[list[str]], dict[str, int], dict[str, int]]:
    """``|``-separated cells → each row's findings, positives per finding, and ignored findings' counts."""
    ignored = set(options.ignore)
    rows, dropped, seen = [], Counter(), set()
    for cell in cells:
        tokens = [token.strip() for token in str(cell).split(SEPARATOR)]
        seen.update(tokens)
        dropped.update(token for token in tokens if token in ignored)  # before anything else, aliases too
        kept = SEPARATOR.join(token for token in tokens if token not in ignored)
        rows.append(sorted(set(split_findings(kept, no_finding=options.no_finding, aliases=options.aliases))))
    check_aliases_exist(options, seen, table_path)
    return rows, dict(Counter(f for row in rows for f in row)), dict(dropped)


def check_aliases_exist(options: LabelOptions, seen: set[str], table_path: str | Path = "the table") -> None:
    """Every alias must name a finding the table holds (its own spelling): an alias that matches nothing
    would leave a finding unscored with nothing said (round three: an external set scored on 1 finding
    of the 3 its aliases meant)."""
    unknown = sorted(set(options.aliases) - seen)
    if unknown:
        holds = ", ".join(sorted(s for s in seen if s)[:40])
        raise DataError(
            f"params: aliases {unknown} match no finding of {table_path} (spelt as the table spells them, "
            f"before aliases); it holds: {holds}. Fix the spelling or remove those entries"
        )


def finding_columns(table: pd.DataFrame, columns: Columns) -> list[str]:
    """A wide table's finding columns: every column that is not the image, patient, view or metadata."""
    internal = {"table_row", "patient", "view", columns.image, *(columns.metadata)}
    return [c for c in table.columns if c not in internal]


def wide_findings(
    table: pd.DataFrame, columns: Columns, options: LabelOptions, table_path: str | Path
) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, int]]:
    """One column per finding (1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned) → per
    finding a float vector with NaN where the label is masked, under the uncertainty and blank policies.

    A row whose no-finding column (``data.no_finding``, CheXpert's and MIMIC's ``No Finding``) is 1.0
    was read by the labeler as holding no pathology: its blank cells are negatives, whatever
    ``data.blank`` says, except for findings that are not pathologies (:data:`NOT_PATHOLOGIES`).
    Returns the vectors, positives per finding, uncertain entries per finding (before the policy) and
    per finding how many blank cells the no-finding rule made negative.
    """
    observed = finding_columns(table, columns)
    check_aliases_exist(options, {str(c) for c in observed}, f"table {table_path}")
    _check_uncertain_keys(options, [options.aliases.get(str(c), str(c)) for c in observed], table_path)
    healthy = _healthy_rows(table, observed, options, table_path)
    vectors: dict[str, np.ndarray] = {}
    uncertain_counts: dict[str, int] = {}
    from_no_finding: dict[str, int] = {}
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
        blank = np.isnan(values.to_numpy(dtype=np.float64))
        vector[blank] = 0.0 if options.blank == "negative" else np.nan
        if str(column) not in NOT_PATHOLOGIES and name not in NOT_PATHOLOGIES:
            vector[blank & healthy] = 0.0
            from_no_finding[name] = int((blank & healthy).sum())
        vectors[name] = vector
        uncertain_counts[name] = int(uncertain.sum())
    positives = {name: int((v == 1.0).sum()) for name, v in vectors.items()}
    return vectors, positives, uncertain_counts, from_no_finding


# CheXpert's labeler sets "No Finding" when no pathology is positive or uncertain, Support Devices
# excepted (Irvin et al. 2019): a device on a healthy film says nothing about the rest.
NOT_PATHOLOGIES = frozenset({"Support Devices"})


def _healthy_rows(
    table: pd.DataFrame, observed: list[str], options: LabelOptions, table_path: str | Path
) -> np.ndarray:
    """Rows whose no-finding column is 1.0 (all False when the table has none)."""
    column = next((c for c in observed if options.aliases.get(str(c), str(c)) == options.no_finding), None)
    if column is None:
        return np.zeros(len(table), dtype=bool)
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table[column].notna() & ~values.isin([1.0, 0.0, -1.0])
    if bad.any():
        first = bad.to_numpy().nonzero()[0][0]
        raise DataError(
            f"table {table_path}, column {column!r}, row {int(table['table_row'].iloc[first])}: "
            f"{table[column].iloc[first]!r} is not 1.0, 0.0, -1.0 or blank ({int(bad.sum())} such cells)"
        )
    return (values == 1.0).to_numpy()


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


@dataclasses.dataclass
class Labelled:
    """The label list chosen on the whole table, and every row's labels in its order (NaN: masked)."""

    label_list: LabelList
    labels: np.ndarray
    positives: dict[str, int]
    rare: list[str]
    ignored: dict[str, int]
    masked: dict[str, int]
    uncertain: dict[str, int]
    negatives_from_no_finding: dict[str, int] = dataclasses.field(default_factory=dict)


def label_rows(
    table: pd.DataFrame, columns: Columns, options: LabelOptions, preset: str, table_path: str | Path
) -> Labelled:
    """Choose the label list on the whole table (long: ``|``-separated cells; wide: one column per
    finding) and binarise every row in its order."""
    masked: dict[str, int] = {}
    uncertain: dict[str, int] = {}
    from_no_finding: dict[str, int] = {}
    if columns.label is not None:
        finding_rows, positives, ignored = long_findings(table[columns.label], options, f"table {table_path}")
        _check_ignored_exist(options, set(ignored), table_path)
        label_list, rare = choose(
            positives, options, preset, where=f"column {columns.label!r} of {table_path}"
        )
        labels = binarize(finding_rows, label_list).astype(np.float64)
    else:
        vectors, positives, uncertain, from_no_finding = wide_findings(table, columns, options, table_path)
        _check_ignored_exist(options, {str(c) for c in table.columns}, table_path)
        ignored = {name: int((table[name] == 1.0).sum()) for name in options.ignore if name in table.columns}
        label_list, rare = choose(positives, options, preset, where=f"table {table_path}")
        labels = np.stack([vectors[name] for name in label_list.names], axis=1)
        masked = {name: int(np.isnan(vectors[name]).sum()) for name in label_list.names}
    _check_no_finding_token(options, positives, table_path)
    if rare:
        log.warning("dropped findings with fewer than %d positives: %s", options.min_positives, rare)
    kept = {name: from_no_finding[name] for name in label_list.names if name in from_no_finding}
    return Labelled(label_list, labels, positives, rare, ignored, masked, uncertain, kept)
