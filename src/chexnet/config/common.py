"""The top level of ``params.yaml``: what every stage may read (seed, epochs, batch size, image size,
weights, labels, device, ...), and the names of the sections below it.

The defaults are the seed's (epochs 5, Adam, 224 px, a 20,000-image subset, ImageNet weights) except
where a measured reason is written beside the field (batch 16, ``lr: auto``).
"""

from __future__ import annotations

from dataclasses import dataclass

from chexnet.config.schema import ParamsError, check_ranges, param
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LABEL_MODES, check_names

# Each section is a dataclass in its own module (chexnet/config/<section>.py); a stage reads the top
# level and the sections it names, so its dvc.yaml dependencies hold only their schema.
SECTIONS = ("demo", "data", "train", "split", "evaluate", "explain")
# data.preset names a preset of chexnet.data.presets.registry and demo.layout one of
# chexnet.synthetic.layouts (their homes: the schema sits below both): the check stage, prepare, the demo
# stage and chexnet check refuse a name they do not hold before any work.
PRESET_NAME = r"[a-z][a-z0-9_]*"
# ``architecture`` names a backbone of chexnet.model.network.ARCHITECTURES (its one home, above this
# layer): the check stage, train and chexnet check refuse a name it does not hold.
ARCHITECTURE_NAME = r"auto|[a-z][a-z0-9_]*"


@dataclass(frozen=True)
class CommonParams:
    seed: int = param(42, low=0)
    epochs: int = param(5, low=0)  # 0: evaluate-only (the weights file judged as it is, no training)
    # The seed's is 32. 16 gives a CPU first run twice the optimisation steps in the same time: from
    # random initialisation its heat maps point (0.707 against 0.62-0.68 at 32; benchmarks/README.md)
    batch_size: int = param(16, low=1)
    # auto: the seed's 1e-4 when training starts from pretrained weights, 3e-4 from random initialisation
    # (docs/training.md, measured in benchmarks/README.md); or a number
    lr: float | str = param("auto", low=0, high=1, low_open=True, choices=("auto",))
    image_size: int = param(224, low=32, high=4096)  # DenseNet121 needs 32 px or more
    subset: int = param(20000, low=1)
    weights: str = param("imagenet", file=True)  # inputs/imagenet | inputs/none | path to a state_dict
    # auto: the weights file's backbone (its record says), else densenet121 (the seed's) | resnet50
    architecture: str = param("auto", pattern=ARCHITECTURE_NAME)
    labels: str | list[str] = "auto"  # auto | from_data | nih14 | [explicit, names]
    device: str = param("auto", pattern=r"auto|cpu|cuda(:\d+)?|mps")  # auto | cpu | cuda | cuda:N
    num_workers: int = param(0, low=0)

    def __post_init__(self) -> None:
        check_ranges(self)
        if isinstance(self.labels, str):
            if self.labels not in LABEL_MODES:
                raise ParamsError(
                    f"params: labels must be one of {', '.join(LABEL_MODES)} or a list of finding names, "
                    f"got {self.labels!r}"
                )
        else:
            try:
                check_names(self.labels, "params: labels")
            except ChexnetError as error:
                raise ParamsError(str(error)) from error
