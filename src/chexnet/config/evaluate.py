"""``evaluate:``: how the test split is measured (thresholds, intervals, calibration, TTA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.schema import check_ranges, param

THRESHOLD_METHODS = ("youden", "max_f1")
TTA_MODES = ("none", "hflip", "tencrop")


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

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
