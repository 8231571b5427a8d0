"""How many images a table gives each finding under the label options, without reading an image: the
count table of docs/data.md ("Counts"), checked against torchxrayvision's dataset classes in
tests/unit/data/test_counts.py. It runs the same steps as prepare (usable rows, views, duplicates, labels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.labels import LabelOptions
from chexnet.data.findings import label_rows
from chexnet.data.prepare import usable_rows
from chexnet.data.presets import registry


def label_counts(
    preset: str,
    table_path: str | Path,
    options: LabelOptions,
    views: Sequence[str] = (),
    metadata_table: str | Path = "",
) -> pd.DataFrame:
    """One row per finding: ``images`` (usable rows), ``positives``, ``negatives``, ``masked``."""
    table = registry.read_source(preset, table_path, metadata_table)
    columns = registry.resolve_columns(preset, "", "", "")
    table, _, _, _ = usable_rows(table, columns, table_path, views, preset)
    labelled = label_rows(table, columns, options, preset, table_path)
    labels = labelled.labels
    return pd.DataFrame(
        {
            "finding": list(labelled.label_list.names),
            "images": len(labels),
            "positives": (labels == 1).sum(axis=0),
            "negatives": (labels == 0).sum(axis=0),
            "masked": np.isnan(labels).sum(axis=0),
        }
    )
