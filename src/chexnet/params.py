"""The one params schema: what ``params.yaml`` may hold, its types and its defaults.

Stages read their settings only through :func:`load_params`, so a misspelled key or a wrong type is
caught before any work starts, with the key's full name in the message, instead of being silently
ignored. The defaults are the seed's (epochs 5, Adam, 224 px, a 20,000-image subset, ImageNet weights)
except where a measured reason is written beside the field (batch 16, ``lr: auto``), and point the data
at the built-in demo set.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexnet.errors import ChexnetError
from chexnet.labels import BLANK_POLICIES, LABEL_MODES, UNCERTAIN_POLICIES, LabelOptions, check_names


class ParamsError(ChexnetError, ValueError):
    """params.yaml does not fit the schema; the message names the key and what to do."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    free: bool = False,
    file: bool = False,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A field with its allowed values declared where it is declared (one home per rule).

    ``low``/``high`` bound numbers (inclusive unless ``*_open``), ``choices`` or ``pattern`` limit text,
    ``free`` marks text that is a path or a name; ``file`` marks a path that ``dvc.yaml`` lists as a
    dependency (``${key}``), so the file named is tracked by content. :func:`check_ranges` enforces them
    all, and the
    robustness tests derive their out-of-range values from the same metadata, so a new param is tested
    as soon as it is declared.
    """
    metadata = {"low": low, "high": high, "low_open": low_open, "high_open": high_open,
                "choices": choices, "pattern": pattern, "free": free or file, "file": file}  # fmt: skip
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


VIEWS = ("PA", "AP", "lateral")  # data.views: what the chexpert and mimic presets can filter on
DEMO_LAYOUTS = ("seed", "nih", "chexpert", "mimic")
PRESETS = ("seed", "nih", "chexpert", "mimic")
# torch.compile's modes; reduce-overhead and max-autotune also replay CUDA graphs (launch-bound batches).
# dvc.yaml cannot make a dependency conditional, and a dependency must exist: a file param that names
# no file (or ImageNet's weights, which live in torch's cache) names one of these tracked stand-ins,
# read back here as the plain keywords the library takes ("" for no file).
NO_FILE = "inputs/none"
IMAGENET_FILE = "inputs/imagenet"
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
    layout: str = param("seed", choices=DEMO_LAYOUTS)  # write the set in that source's table layout


@dataclass(frozen=True)
class DataParams:
    """Where the table and the images are, and which columns hold what."""

    table: str = param("data/demo/table.parquet", free=True)
    images: str = param("data/demo/images", free=True)
    preset: str = param("seed", choices=PRESETS)  # the layout of the table (README "Your own data")
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


def _check_value(value: Any, meta: dict[str, Any], key: str) -> None:
    if isinstance(value, dict):  # {finding: policy}: the policies must be allowed values
        for name, item in value.items():
            _check_value(item, meta, f"{key}.{name}")
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, meta, key)
        return
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ParamsError(f"params: {key} must be a finite number, got {value}")
        too_low = low is not None and (value <= low if meta["low_open"] else value < low)
        too_high = high is not None and (value >= high if meta["high_open"] else value > high)
        if too_low or too_high:
            left = "(" if meta["low_open"] else "["
            right = ")" if meta["high_open"] else "]"
            span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            raise ParamsError(f"params: {key} must be in {span}, got {value}")
    if isinstance(value, str):
        choices, pattern = meta.get("choices"), meta.get("pattern")
        if choices is not None and value not in choices:
            numeric = low is not None or high is not None
            if numeric and _looks_like_number(value):
                raise ParamsError(
                    f"params: {key}: {value!r} is text, not a number; write it without quotes "
                    f"(e.g. {key.rsplit('.', 1)[-1]}: {value.strip()}) or use one of {', '.join(choices)}"
                )
            raise ParamsError(f"params: {key} must be one of {', '.join(choices)}, got {value!r}")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ParamsError(f"params: {key}: {value!r} is not a valid value (expected {pattern})")


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Every field's declared range or choices (:func:`param`), in this dataclass and the nested ones."""
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        key = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
        elif spec.metadata:
            _check_value(value, dict(spec.metadata), key)


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
    files = {f.name for f in dataclasses.fields(cls) if f.metadata.get("file")}
    # YAML 1.1 reads an unquoted `off` as false, and `dvc exp run -S train.amp=off` writes it so: a text
    # param that allows "off" takes false as "off".
    offs = {f.name for f in dataclasses.fields(cls) if "off" in (f.metadata.get("choices") or ())}
    values = {}
    for name, value in raw.items():
        annotation = hints[name]
        if name in offs and value is False:
            value = "off"
        values[name] = _coerce(value, annotation, f"{prefix}.{name}" if prefix else name)
        if name in files:
            if isinstance(values[name], str) and not values[name].strip():
                key = f"{prefix}.{name}" if prefix else name
                raise ParamsError(
                    f"params: {key} is empty; dvc.yaml lists it as a dependency and DVC cannot track an "
                    f"empty path (dvc repro stops with 'unexpected error'): write {NO_FILE} for no file"
                )
            values[name] = _from_stand_in(values[name], name)
    return cls(**values)


def _from_stand_in(value: str, name: str) -> str:
    """``inputs/none`` -> "" (no file) and ``inputs/imagenet`` -> ``imagenet``; ``weights: inputs/none``
    -> ``none`` (random initialisation). Other paths are kept as written."""
    key = value.removeprefix("./")
    if key == NO_FILE:
        return "none" if name == "weights" else ""
    if key == IMAGENET_FILE and name == "weights":
        return "imagenet"
    return value


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Build and validate :class:`Params` from a parsed mapping; missing keys take their defaults."""
    return _build(Params, raw)


def read_yaml(text: str, where: str | Path) -> Any:
    """YAML as DVC reads it: ruamel.yaml's safe loader, YAML 1.2 (``dvc.utils.serialize.parse_yaml``).

    PyYAML reads YAML 1.1, where ``1e-4`` (no dot) is a string and ``off``/``yes`` are booleans; DVC
    resolves ``${...}``, records ``dvc.lock`` and writes ``dvc exp run -S`` values under YAML 1.2. One
    reading for both, so a stage sees the value DVC recorded.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe").load(text)
    except YAMLError as error:
        raise ParamsError(f"params: {where} is not valid YAML: {' '.join(str(error).split())}") from error


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` (missing file: all defaults) and validate it against the schema."""
    path = Path(path)
    if not path.exists():
        return Params()
    return params_from_dict(read_yaml(path.read_text(encoding="utf-8"), path))


def file_params(params: Params) -> dict[str, str]:
    """Every ``file=True`` param (those ``dvc.yaml`` lists as ``${key}`` dependencies) by its dotted key,
    with its value."""
    found: dict[str, str] = {}

    def walk(obj: Any, prefix: str) -> None:
        for spec in dataclasses.fields(obj):
            value = getattr(obj, spec.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{spec.name}.")
            elif spec.metadata.get("file"):
                found[f"{prefix}{spec.name}"] = value

    walk(params, "")
    return found


def params_to_dict(params: Params) -> dict[str, Any]:
    return dataclasses.asdict(params)
