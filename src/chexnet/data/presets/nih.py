"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or ``_v2020``), images named ``PPPPPPPP_FFF.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core import io
from chexnet.data.presets.base import Columns, DemoLayout, DrawnImage, Preset, findings_cells, nih_file_name


def _write_demo(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "Image Index": [nih_file_name(d) for d in drawn],
            "Finding Labels": findings_cells(drawn),
            "Follow-up #": [d.follow_up for d in drawn],
            "Patient ID": [10000 + d.patient for d in drawn],
            "Patient Age": [d.age for d in drawn],
            "Patient Gender": [d.sex for d in drawn],
            "View Position": views,
        }
    )
    io.write_csv(out_dir / PRESET.demo.table, table)
    return table


PRESET = Preset(
    name="nih",
    columns=Columns(
        "Image Index",
        "Finding Labels",
        "Patient ID",
        view="View Position",
        groups=(
            ("sex", "Patient Gender"),
            ("sex", "Patient Sex"),
            ("age", "Patient Age"),  # v2020: Sex
            ("view", "View Position"),
        ),
    ),
    demo=DemoLayout(table="Data_Entry_2017.csv", images="images", entry=nih_file_name, write=_write_demo),
    notes="NIH's Data_Entry_2017.csv or Data_Entry_2017_v2020.csv",
)
