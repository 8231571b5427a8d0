"""``split:``: the patient-level split, stratified at random or NIH's official lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.schema import ParamsError, check_ranges, param

SPLIT_METHODS = ("random", "official")


@dataclass(frozen=True)
class SplitParams:
    """Patient-level split: stratified at random, or NIH's official lists (train gets the rest)."""

    SECTION: ClassVar[str] = "split"

    method: str = param("random", choices=SPLIT_METHODS)
    val_fraction: float = param(0.1, low=0, high=1, low_open=True, high_open=True)
    test_fraction: float = param(0.2, low=0, high=1, low_open=True, high_open=True)  # random only
    test_list: str = param("", file=True)  # official: one image name a line (NIH's test_list.txt, .gz)
    train_val_list: str = param("", file=True)  # official, optional: NIH's train_val_list.txt

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
        if self.method == "official" and not self.test_list:
            raise ParamsError("params: split.method official needs split.test_list (NIH's test_list.txt)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamsError(
                "params: split.val_fraction and split.test_fraction must sum to less than 1, got "
                f"{self.val_fraction} and {self.test_fraction}"
            )
