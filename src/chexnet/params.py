"""The one params schema: what ``params.yaml`` may hold, its types and its defaults.

Stages read their settings only through :func:`load_params`, so a misspelled key or a wrong type is
caught before any work starts, with the key's full name in the message, instead of being silently
ignored. The defaults are the seed's (epochs 5, batch 32, Adam lr 1e-4, 224 px, a 20,000-image
subset, ImageNet weights) and point the data at the built-in demo set.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chexnet.errors import ChexnetError
from chexnet.labels import BLANK_POLICIES, LABEL_MODES, UNCERTAIN_POLICIES, LabelOptions, check_names

VIEWS = ("PA", "AP", "lateral")  # data.views: what the chexpert and mimic presets can filter on
DEMO_LAYOUTS = ("seed", "nih", "chexpert", "mimic")


class ParamsError(ChexnetError, ValueError):
    """params.yaml does not fit the schema; the message names the key and what to do."""


@dataclass(frozen=True)
class DemoParams:
    """The synthetic NIH-like demo set written by the ``demo`` stage."""

    n_patients: int = 800
    n_images: int = 2000
    image_size: int = 256  # side of the generated PNGs, in pixels (NIH's are 1024)
    no_finding_fraction: float = 0.2
    rgba_images: int = 3  # a few stored as RGBA and 16-bit, as in the real data
    gray16_images: int = 3
    seed: int = 2017
    layout: str = "seed"  # seed | nih | chexpert | mimic: write the set in that source's table layout


@dataclass(frozen=True)
class DataParams:
    """Where the table and the images are, and which columns hold what."""

    table: str = "data/demo/table.parquet"
    images: str = "data/demo/images"
    preset: str = "seed"  # seed | nih | chexpert | mimic: the layout of the table (README "Your own data")
    metadata_table: str = ""  # mimic: mimic-cxr-2.0.0-metadata.csv(.gz), joined on subject_id, study_id
    image_column: str = ""  # "" = the preset's; set one to override it
    label_column: str = ""
    patient_column: str = ""  # "none": patient ids from NIH file names PPPPPPPP_FFF.png
    bbox_table: str = "data/demo/BBox_List.csv"
    workers: int = 0  # decoder threads for prepare; 0 = every core
    max_rejected_fraction: float = 0.01  # prepare fails when more images than this share are unusable
    # How findings are read (the label list itself is the top-level ``labels``; README "Findings").
    no_finding: str = "No Finding"  # the token meaning "nothing found" (not a class)
    aliases: dict[str, str] = field(
        default_factory=dict
    )  # exact names mapped, e.g. Pleural Effusion: Effusion
    ignore_findings: list[str] = field(default_factory=list)  # findings removed before anything (counted)
    min_positives: int = 10  # fewer positives in the whole table stop prepare ...
    drop_rare: bool = False  # ... unless they are dropped (counted in metrics/prepare.json)
    uncertain: str | dict[str, str] = "ignore"  # chexpert/mimic -1.0: ignore | zeros | ones, or per finding
    blank: str = "negative"  # chexpert/mimic blank (not mentioned): negative | ignore
    views: list[str] = field(default_factory=list)  # keep only these views: PA, AP, lateral ([] = all)


@dataclass(frozen=True)
class SplitParams:
    """Patient-level split: stratified at random, or NIH's official lists (train gets the rest)."""

    method: str = "random"  # random | official
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # random only; official takes test from test_list
    test_list: str = ""  # official: one image name a line (NIH's test_list.txt, .gz too)
    train_val_list: str = ""  # official, optional: NIH's train_val_list.txt, to check coverage


@dataclass(frozen=True)
class EvaluateParams:
    threshold: float = 0.5  # the seed's threshold, reported beside the validation-chosen ones
    threshold_method: str = "youden"  # youden | max_f1: how per-class thresholds are chosen on validation
    bootstrap_resamples: int = 1000  # patient-level resamples for confidence intervals
    ci_level: float = 0.95
    calibration_bins: int = 10
    tta: str = "none"  # none | hflip | tencrop: test-time augmentation
    grid_images: int = 16  # test images in the prediction picture grid


@dataclass(frozen=True)
class ExplainParams:
    target_layer: str = "features[-1]"  # the seed's Grad-CAM++ layer; "final_relu" = post-ReLU features
    top_k: int = 3  # overlays per finding: its most probable test images
    cam_threshold: float = 0.5  # IoBB: heat map thresholded at this fraction of its maximum


# torch.compile's modes; reduce-overhead and max-autotune also replay CUDA graphs (launch-bound batches).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainParams:
    """How to train fast and robustly; the defaults keep the seed's behaviour (no extra tricks)."""

    processes: int = 1  # processes on this machine (torchrun --nproc_per_node), e.g. one per GPU
    amp: str = (
        "auto"  # auto (CUDA: bf16 if supported, else fp16 + grad scaler; CPU: fp32) | bf16 | fp16 | off
    )
    channels_last: bool = False  # faster on CUDA from batch 128 and on CPU; slower at 32 on CUDA
    compile: bool = False  # torch.compile the model (CUDA; slow first epoch, faster after)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | ...
    hflip: bool = False  # random horizontal flips, on the device
    pos_weight: bool = False  # weight positives by negatives/positives per class (class imbalance)
    early_stopping_patience: int = 0  # 0 = off
    lr_plateau_patience: int = 0  # 0 = off; else lr *= lr_plateau_factor after this many flat epochs
    lr_plateau_factor: float = 0.1
    checkpoint_dir: str = "checkpoints"  # per-epoch resume point; not a DVC output, so it survives a kill


@dataclass(frozen=True)
class Params:
    seed: int = 42
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    image_size: int = 224
    subset: int = 20000
    weights: str = "imagenet"  # imagenet | none | path to a state_dict file
    labels: str | list[str] = "auto"  # auto | from_data | nih14 | [explicit, names]
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    demo: DemoParams = field(default_factory=DemoParams)
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    split: SplitParams = field(default_factory=SplitParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    explain: ExplainParams = field(default_factory=ExplainParams)

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "subset": self.subset,
            "demo.n_patients": self.demo.n_patients,
            "demo.n_images": self.demo.n_images,
            "demo.image_size": self.demo.image_size,
            "evaluate.grid_images": self.evaluate.grid_images,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ParamsError(f"params: {key} must be positive, got {value}")
        if not self.lr > 0:
            raise ParamsError(f"params: lr must be positive, got {self.lr}")
        if self.data.workers < 0:
            raise ParamsError(f"params: data.workers must be 0 (every core) or more, got {self.data.workers}")
        self._check_labels()
        if not 0 <= self.data.max_rejected_fraction <= 1:
            raise ParamsError("params: data.max_rejected_fraction must be in [0, 1]")
        if self.train.processes < 1:
            raise ParamsError(f"params: train.processes must be 1 or more, got {self.train.processes}")
        if self.train.amp not in ("auto", "bf16", "fp16", "off"):
            raise ParamsError(f"params: train.amp must be auto, bf16, fp16 or off, got {self.train.amp!r}")
        if self.train.compile_mode not in COMPILE_MODES:
            raise ParamsError(
                f"params: train.compile_mode must be one of {', '.join(COMPILE_MODES)},"
                f" got {self.train.compile_mode!r}"
            )
        if self.num_workers < 0:
            raise ParamsError(f"params: num_workers must be 0 or more, got {self.num_workers}")
        if self.image_size < 32:
            raise ParamsError(
                f"params: image_size must be at least 32 for DenseNet121, got {self.image_size}"
            )
        if self.split.method not in ("random", "official"):
            raise ParamsError(f"params: split.method must be random or official, got {self.split.method!r}")
        if self.split.method == "official" and not self.split.test_list:
            raise ParamsError("params: split.method official needs split.test_list (NIH's test_list.txt)")
        fractions = self.split.val_fraction + self.split.test_fraction
        if not (0 < self.split.val_fraction < 1 and 0 < self.split.test_fraction < 1 and fractions < 1):
            raise ParamsError(
                "params: split.val_fraction and split.test_fraction must each be in (0, 1) and sum to "
                f"less than 1, got {self.split.val_fraction} and {self.split.test_fraction}"
            )
        if self.demo.n_images < self.demo.n_patients:
            raise ParamsError("params: demo.n_images must be at least demo.n_patients (one image each)")
        if not 0 <= self.demo.no_finding_fraction < 1:
            raise ParamsError("params: demo.no_finding_fraction must be in [0, 1)")
        if self.evaluate.threshold_method not in ("youden", "max_f1"):
            raise ParamsError("params: evaluate.threshold_method must be youden or max_f1")
        if self.evaluate.tta not in ("none", "hflip", "tencrop"):
            raise ParamsError("params: evaluate.tta must be none, hflip or tencrop")
        if self.evaluate.bootstrap_resamples < 1 or not 0 < self.evaluate.ci_level < 1:
            raise ParamsError(
                "params: evaluate.bootstrap_resamples must be ≥ 1 and evaluate.ci_level in (0, 1)"
            )
        if not 0 < self.evaluate.threshold < 1:
            raise ParamsError(f"params: evaluate.threshold must be in (0, 1), got {self.evaluate.threshold}")

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
        if self.demo.layout not in DEMO_LAYOUTS:
            raise ParamsError(f"params: demo.layout must be one of {', '.join(DEMO_LAYOUTS)}")

    def label_options(self) -> LabelOptions:
        """The label params as the one object that :mod:`chexnet.labels` builds the list from."""
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


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check one leaf value against its annotated type; ints are accepted where floats are expected.

    ``A | B`` takes the first arm the value fits; ``list[str]`` and ``dict[str, str]`` check their items.
    """
    if isinstance(annotation, types.UnionType):
        arms = typing.get_args(annotation)
        for arm in arms:
            try:
                return _coerce(value, arm, key)
            except ParamsError:
                continue
        names = " or ".join(getattr(a, "__name__", str(a)) for a in arms)
        raise ParamsError(f"params: {key} must be {names}, got {value!r} ({type(value).__name__})")
    origin = typing.get_origin(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params: {key} must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ParamsError(f"params: {key} must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {
            _coerce(k, key_type, f"{key} key"): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()
        }
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ParamsError(f"params: {key} must be a number, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ParamsError(
            f"params: {key} must be {annotation.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def _build(cls: Any, raw: Any, prefix: str = "") -> Any:
    where = prefix or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ParamsError(
            f"params: unknown key(s) {', '.join(repr(f'{prefix}.{k}' if prefix else k) for k in unknown)} "
            f"at {where}; known keys: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        annotation = hints[name]
        values[name] = _coerce(value, annotation, f"{prefix}.{name}" if prefix else name)
    return cls(**values)


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Build and validate :class:`Params` from a parsed mapping; missing keys take their defaults."""
    return _build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` (missing file: all defaults) and validate it against the schema."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"params: {path} is not valid YAML: {error}") from error
    return params_from_dict(raw)


def params_to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)
