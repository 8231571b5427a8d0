"""The one params schema: what ``params.yaml`` may hold, its types and its defaults.

Stages read their settings only through :func:`load_params`, so a misspelled key or a wrong type is
caught before any work starts, with the key's full name in the message, instead of being silently
ignored. The defaults are the seed's (epochs 5, Adam, 224 px, a 20,000-image subset, ImageNet weights)
except where a measured reason is written beside the field (batch 16, ``lr: auto``), and point the data
at the built-in demo set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexnet.config.schema import ParamsError, build, check_ranges, param, read_yaml
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import BLANK_POLICIES, LABEL_MODES, UNCERTAIN_POLICIES, LabelOptions, check_names

VIEWS = ("PA", "AP", "lateral")  # data.views: what the chexpert and mimic presets can filter on
# data.preset and demo.layout name a preset of chexnet.data.presets.registry, their one home (this
# module sits below the data layer and every stage reads it): prepare, the demo stage and chexnet check
# refuse a name it does not hold before any work.
PRESET_NAME = r"[a-z][a-z0-9_]*"
# torch.compile's modes; reduce-overhead and max-autotune also replay CUDA graphs (launch-bound batches).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_MODES = ("auto", "bf16", "fp16", "off")
THRESHOLD_METHODS = ("youden", "max_f1")
TTA_MODES = ("none", "hflip", "tencrop")
SPLIT_METHODS = ("random", "official")


@dataclass(frozen=True)
class DemoParams:
    """The synthetic NIH-like demo set written by the ``demo`` stage."""

    n_patients: int = param(300, low=1)
    n_images: int = param(720, low=1)  # the first run's size: benchmarks/README.md, "The demo"
    image_size: int = param(256, low=32, high=4096)  # side of the generated PNGs (NIH's are 1024)
    no_finding_fraction: float = param(0.2, low=0, high=1, high_open=True)
    max_findings: int = param(4, low=1, high=14)  # new findings per image: 1..max, fewer more likely
    contrast: float = param(2.0, low=0, low_open=True, high=5)  # strength of every finding's pattern
    rgba_images: int = param(3, low=0)  # a few stored as RGBA and 16-bit, as in the real data
    gray16_images: int = param(3, low=0)
    seed: int = param(2017, low=0)
    layout: str = param("seed", pattern=PRESET_NAME)  # write the set in that source's table layout


@dataclass(frozen=True)
class DataParams:
    """Where the table and the images are, and which columns hold what."""

    table: str = param("data/demo/table.parquet", free=True)
    images: str = param("data/demo/images", free=True)
    preset: str = param("seed", pattern=PRESET_NAME)  # the layout of the table (README "Your own data")
    metadata_table: str = param("", file=True)  # mimic: mimic-cxr-2.0.0-metadata.csv(.gz)
    image_column: str = param("", free=True)  # "" = the preset's; set one to override it
    label_column: str = param("", free=True)
    patient_column: str = param("", free=True)  # "none": patient ids from NIH file names PPPPPPPP_FFF.png
    bbox_table: str = param("data/demo/BBox_List.csv", file=True)  # inputs/none: no boxes
    workers: int = param(0, low=0)  # decoder threads for prepare; 0 = every core
    max_rejected_fraction: float = param(0.01, low=0, high=1)  # prepare fails above this share
    # How findings are read (the label list itself is the top-level ``labels``; docs/data.md).
    no_finding: str = param("No Finding", pattern=r".*\S.*")  # the "nothing found" token (not a class)
    aliases: dict[str, str] = param(factory=dict)  # exact names mapped, e.g. Pleural Effusion: Effusion
    ignore_findings: list[str] = param(factory=list)  # findings removed before anything (counted)
    min_positives: int = param(10, low=1)  # fewer positives in the whole table stop prepare ...
    drop_rare: bool = False  # ... unless they are dropped (counted in metrics/prepare.json)
    uncertain: str | dict[str, str] = param("ignore", choices=UNCERTAIN_POLICIES)  # or {Finding: policy}
    blank: str = param("negative", choices=BLANK_POLICIES)  # chexpert/mimic blank (not mentioned)
    views: list[str] = param(factory=list, choices=VIEWS)  # keep only these views ([] = all)


@dataclass(frozen=True)
class SplitParams:
    """Patient-level split: stratified at random, or NIH's official lists (train gets the rest)."""

    method: str = param("random", choices=SPLIT_METHODS)
    val_fraction: float = param(0.1, low=0, high=1, low_open=True, high_open=True)
    test_fraction: float = param(0.2, low=0, high=1, low_open=True, high_open=True)  # random only
    test_list: str = param("", file=True)  # official: one image name a line (NIH's test_list.txt, .gz)
    train_val_list: str = param("", file=True)  # official, optional: NIH's train_val_list.txt


@dataclass(frozen=True)
class EvaluateParams:
    threshold: float = param(0.5, low=0, high=1, low_open=True, high_open=True)  # the seed's threshold
    threshold_method: str = param("youden", choices=THRESHOLD_METHODS)  # chosen on validation
    bootstrap_resamples: int = param(1000, low=1)  # patient-level resamples for confidence intervals
    ci_level: float = param(0.95, low=0, high=1, low_open=True, high_open=True)
    calibration_bins: int = param(10, low=1, high=1000)
    tta: str = param("none", choices=TTA_MODES)  # test-time augmentation
    grid_images: int = param(16, low=1, high=256)  # test images in the prediction picture grid


@dataclass(frozen=True)
class ExplainParams:
    target_layer: str = param("features[-1]", pattern=r"\w+(\[-?\d+\])*(\.\w+(\[-?\d+\])*)*")  # seed's
    top_k: int = param(3, low=1, high=100)  # overlays per finding: its most probable test images
    cam_threshold: float = param(0.5, low=0, high=1, low_open=True)  # IoBB: map cut at this × its max


@dataclass(frozen=True)
class TrainParams:
    """How to train fast and robustly; the defaults keep the seed's behaviour (no extra tricks)."""

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


@dataclass(frozen=True)
class Params:
    seed: int = param(42, low=0)
    epochs: int = param(5, low=1)
    # The seed's is 32. 16 gives a CPU first run twice the optimisation steps in the same time: from
    # random initialisation its heat maps point (0.707 against 0.62-0.68 at 32; benchmarks/README.md)
    batch_size: int = param(16, low=1)
    # auto: the seed's 1e-4 when training starts from pretrained weights, 3e-4 from random initialisation
    # (docs/training.md, measured in benchmarks/README.md); or a number
    lr: float | str = param("auto", low=0, high=1, low_open=True, choices=("auto",))
    image_size: int = param(224, low=32, high=4096)  # DenseNet121 needs 32 px or more
    subset: int = param(20000, low=1)
    weights: str = param("imagenet", file=True)  # inputs/imagenet | inputs/none | path to a state_dict
    labels: str | list[str] = "auto"  # auto | from_data | nih14 | [explicit, names]
    device: str = param("auto", pattern=r"auto|cpu|cuda(:\d+)?|mps")  # auto | cpu | cuda | cuda:N
    num_workers: int = param(0, low=0)
    demo: DemoParams = field(default_factory=DemoParams)
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    split: SplitParams = field(default_factory=SplitParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    explain: ExplainParams = field(default_factory=ExplainParams)

    def __post_init__(self) -> None:
        check_ranges(self)
        self._check_labels()
        if self.split.method == "official" and not self.split.test_list:
            raise ParamsError("params: split.method official needs split.test_list (NIH's test_list.txt)")
        if self.split.val_fraction + self.split.test_fraction >= 1:
            raise ParamsError(
                "params: split.val_fraction and split.test_fraction must sum to less than 1, got "
                f"{self.split.val_fraction} and {self.split.test_fraction}"
            )
        if self.demo.n_images < self.demo.n_patients:
            raise ParamsError("params: demo.n_images must be at least demo.n_patients (one image each)")
        if self.demo.rgba_images + self.demo.gray16_images > self.demo.n_images:
            raise ParamsError("params: demo.rgba_images + demo.gray16_images must not exceed demo.n_images")

    def _check_labels(self) -> None:
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
        policies = (
            [self.data.uncertain] if isinstance(self.data.uncertain, str) else self.data.uncertain.values()
        )
        if any(p not in UNCERTAIN_POLICIES for p in policies):
            raise ParamsError(
                f"params: data.uncertain must be one of {', '.join(UNCERTAIN_POLICIES)} (or a mapping "
                f"finding: policy, with an optional default), got {self.data.uncertain!r}"
            )
        if self.data.blank not in BLANK_POLICIES:
            raise ParamsError(f"params: data.blank must be one of {', '.join(BLANK_POLICIES)}")
        if any(v not in VIEWS for v in self.data.views):
            raise ParamsError(f"params: data.views may hold {', '.join(VIEWS)}, got {self.data.views}")
        if self.data.min_positives < 1:
            raise ParamsError(f"params: data.min_positives must be 1 or more, got {self.data.min_positives}")
        if not self.data.no_finding.strip():
            raise ParamsError("params: data.no_finding must name the table's no-finding token")

    def label_options(self) -> LabelOptions:
        """The label params as the one object that :mod:`chexnet.core.labels` builds the list from."""
        cfg = self.data
        return LabelOptions(
            spec=self.labels if isinstance(self.labels, str) else tuple(self.labels),
            no_finding=cfg.no_finding,
            aliases=dict(cfg.aliases),
            ignore=tuple(cfg.ignore_findings),
            min_positives=cfg.min_positives,
            drop_rare=cfg.drop_rare,
            uncertain=cfg.uncertain if isinstance(cfg.uncertain, str) else dict(cfg.uncertain),
            blank=cfg.blank,
        )


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Build and validate :class:`Params` from a parsed mapping; missing keys take their defaults."""
    return build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` (missing file: all defaults) and validate it against the schema."""
    path = Path(path)
    if not path.exists():
        return Params()
    return params_from_dict(read_yaml(path.read_text(encoding="utf-8"), path))


def params_to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)
