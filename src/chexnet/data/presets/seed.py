"""The seed's gold table: a Parquet file with ``imagem``, ``patologia`` (``|``-separated) and
``paciente_id``; the demo set copies its format."""

from __future__ import annotations

from chexnet.data.presets.base import Columns, Preset

COLUMNS = ("imagem", "patologia", "paciente_id")  # image file, findings, patient: the seed's style
# Subgroup columns, used when the table has them (the seed's gold table does not; the demo writes them).
GROUPS = (("sex", "sexo"), ("age", "idade"), ("view", "incidencia"))


PRESET = Preset(
    name="seed",
    columns=Columns(*COLUMNS, groups=GROUPS),
    notes="a Parquet/CSV table with imagem, patologia (|-separated) and paciente_id",
)
