"""``explain:``: Grad-CAM++ heat maps and how they are scored against boxes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.schema import check_ranges, param


@dataclass(frozen=True)
class ExplainParams:
    SECTION: ClassVar[str] = "explain"

    # auto: the network's own (DenseNet121: features[-1], the seed's; ResNet50: layer4), or a layer name
    target_layer: str = param("auto", pattern=r"\w+(\[-?\d+\])*(\.\w+(\[-?\d+\])*)*")
    top_k: int = param(3, low=1, high=100)  # overlays per finding: its most probable test images
    cam_threshold: float = param(0.5, low=0, high=1, low_open=True)  # IoBB: map cut at this × its max

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
