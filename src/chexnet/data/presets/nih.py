"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or ``_v2020``), images named ``PPPPPPPP_FFF.png``."""

from __future__ import annotations

from chexnet.data.presets.base import Columns, Preset

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
    notes="NIH's Data_Entry_2017.csv or Data_Entry_2017_v2020.csv",
)
