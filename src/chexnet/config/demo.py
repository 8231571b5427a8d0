"""``demo:``: the synthetic NIH-like demo set written by the demo stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.common import PRESET_NAME
from chexnet.config.schema import ParamsError, check_ranges, param


@dataclass(frozen=True)
class DemoParams:
    SECTION: ClassVar[str] = "demo"

    n_patients: int = param(300, low=1)
    n_images: int = param(720, low=1)  # the first run's size: benchmarks/README.md, "The demo"
    image_size: int = param(256, low=32, high=4096)  # side of the generated PNGs (NIH's are 1024)
    no_finding_fraction: float = param(0.2, low=0, high=1, high_open=True)
    max_findings: int = param(4, low=1, high=14)  # new findings per image: 1..max, fewer more likely
    contrast: float = param(2.0, low=0, low_open=True, high=5)  # strength of every finding's pattern
    # The planted subgroup difference (docs/evaluation.md): this share of women's findings is labelled but
    # not painted (and has no box), so a model trained on the demo under-diagnoses women (0: none).
    female_occult: float = param(0.3, low=0, high=1, high_open=True)
    rgba_images: int = param(3, low=0)  # a few stored as RGBA and 16-bit, as in the real data
    gray16_images: int = param(3, low=0)
    seed: int = param(2017, low=0)
    layout: str = param("seed", pattern=PRESET_NAME)  # write the set in that source's table layout
    # A second, smaller set from other patients in another layout ("another hospital"), under
    # external/: the default external test set (evaluate.external). 0 images: none.
    external_layout: str = param("padchest", pattern=PRESET_NAME)
    external_patients: int = param(100, low=1)
    external_images: int = param(200, low=0)
    external_contrast: float = param(1.2, low=0, low_open=True, high=5)  # its "scanner": fainter findings

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
        if self.external_images and self.external_images < self.external_patients:
            raise ParamsError("params: demo.external_images must be 0 or at least demo.external_patients")
        if self.n_images < self.n_patients:
            raise ParamsError("params: demo.n_images must be at least demo.n_patients (one image each)")
        if self.rgba_images + self.gray16_images > self.n_images:
            raise ParamsError("params: demo.rgba_images + demo.gray16_images must not exceed demo.n_images")
