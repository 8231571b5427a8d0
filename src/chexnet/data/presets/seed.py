"""The seed's gold table: a Parquet file with ``imagem``, ``patologia`` (``|``-separated) and
``paciente_id``; the demo set copies its format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core import io
from chexnet.data.presets.base import Columns, DemoLayout, DrawnImage, Preset, findings_cells, nih_file_name

COLUMNS = ("imagem", "patologia", "paciente_id")  # image file, findings, patient: the seed's style
# Subgroup columns, used when the table has them (the seed's gold table does not; the demo writes them).
GROUPS = (("sex", "sexo"), ("age", "idade"), ("view", "incidencia"))


def _write_demo(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            COLUMNS[0]: [nih_file_name(d) for d in drawn],
            COLUMNS[1]: findings_cells(drawn),
            COLUMNS[2]: [10000 + d.patient for d in drawn],
            "sexo": [d.sex for d in drawn],
            "idade": [d.age for d in drawn],
            "incidencia": views,
        }
    )
    io.write_parquet(out_dir / PRESET.demo.table, table)
    return table


PRESET = Preset(
    name="seed",
    columns=Columns(*COLUMNS, groups=GROUPS),
    demo=DemoLayout(table="table.parquet", images="images", entry=nih_file_name, write=_write_demo),
    notes="a Parquet/CSV table with imagem, patologia (|-separated) and paciente_id",
)
