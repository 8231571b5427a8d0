"""``evaluate:``: how the test split is measured (thresholds, intervals, calibration, TTA)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.data import DataSource
from chexnet.config.schema import ParamsError, check_ranges, param

THRESHOLD_METHODS = ("youden", "max_f1")
EXTERNAL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # a DVC stage name (external@<name>) and a folder name
TTA_MODES = ("none", "hflip", "tencrop")


@dataclass(frozen=True)
class ExternalSet(DataSource):
    """One external test set (``evaluate.external.<name>``): another table and image folder, read by its
    own preset and label options (every option ``data:`` has for reading a source: one type,
    :class:`chexnet.config.data.DataSource`), scored with the trained model on the findings both share
    (docs/evaluation.md, "External test sets"). Every entry names its files, ``inputs/none`` for none:
    dvc.yaml lists them as the ``external@<name>`` stage's dependencies."""

    PREFIX: ClassVar[str] = "evaluate.external."


@dataclass(frozen=True)
class EvaluateParams:
    SECTION: ClassVar[str] = "evaluate"

    threshold: float = param(0.5, low=0, high=1, low_open=True, high_open=True)  # the seed's threshold
    threshold_method: str = param("youden", choices=THRESHOLD_METHODS)  # chosen on validation
    bootstrap_resamples: int = param(1000, low=1)  # patient-level resamples for confidence intervals
    ci_level: float = param(0.95, low=0, high=1, low_open=True, high_open=True)
    calibration_bins: int = param(10, low=1, high=1000)
    tta: str = param("none", choices=TTA_MODES)  # test-time augmentation
    grid_images: int = param(16, low=1, high=256)  # test images in the prediction picture grid
    # Results by subgroup (docs/evaluation.md): age bands' edges in years, and the smallest group given
    # an interval (fewer patients, or fewer than 5 with a finding: point values only, said so).
    age_bands: list[int] = param(factory=lambda: [20, 40, 60, 80])
    subgroup_min_patients: int = param(10, low=1)
    # The group each attribute's other groups are compared with, fixed before looking at the results,
    # e.g. {sex: M, age: 40-60}; an attribute not named here compares with its largest group.
    subgroup_reference: dict[str, str] = param(factory=dict)
    # Other datasets to test on, by name: {name: {table, images, preset, ...}} (ExternalSet). None by
    # default; the repo's params.yaml names the demo's second hospital (docs/evaluation.md).
    external: dict[str, ExternalSet] = param(factory=dict)

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
        bad = [name for name in self.external if not re.match(EXTERNAL_NAME, str(name))]
        if bad:
            raise ParamsError(f"params: evaluate.external names {bad}: use letters, digits, - and _ only")
        bands = list(self.age_bands)
        if (
            not bands
            or bands != sorted(set(bands))
            or not all(isinstance(a, int) and 0 < a <= 150 for a in bands)
        ):
            raise ParamsError(
                f"params: evaluate.age_bands must be increasing ages in years, e.g. [20, 40, 60, 80]; got "
                f"{self.age_bands}"
            )
