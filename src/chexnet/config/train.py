"""``train:``: how to train fast and robustly; the defaults keep the seed's behaviour (no extra tricks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.schema import check_ranges, param

# torch.compile's modes; reduce-overhead and max-autotune also replay CUDA graphs (launch-bound batches).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainParams:
    SECTION: ClassVar[str] = "train"

    processes: int = param(1, low=1)  # processes on this machine (torchrun --nproc_per_node)
    # auto: CUDA bf16 if supported, else fp16; CPU bf16 where it is native (AVX512-BF16, AMX), else fp32
    amp: str = param("auto", choices=AMP_MODES)
    channels_last: bool | str = param("auto", choices=("auto",))  # auto: CPU on, CUDA off (slower at 32)
    memory_efficient: bool | str = param("auto", choices=("auto",))  # auto: CPU on (RAM), CUDA off
    compile: bool = False  # torch.compile the model (CUDA; slow first epoch, faster after)
    compile_mode: str = param("default", choices=COMPILE_MODES)
    hflip: bool = False  # random horizontal flips, on the device
    pos_weight: bool = False  # weight positives by negatives/positives per class (class imbalance)
    early_stopping_patience: int = param(0, low=0)  # 0 = off
    lr_plateau_patience: int = param(0, low=0)  # 0 = off; else lr *= lr_plateau_factor after that many
    lr_plateau_factor: float = param(0.1, low=0, high=1, low_open=True, high_open=True)
    checkpoint_dir: str = param("checkpoints", pattern=r".*\S.*")  # per-epoch resume point (not a DVC out)

    def __post_init__(self) -> None:
        check_ranges(self, f"{self.SECTION}.")
