"""How the params schema is checked: declared ranges and choices, types, unknown keys, file params.

The schema's sections are dataclasses (:mod:`chexnet.config.params`) whose fields say their allowed
values with :func:`param`; :func:`build` turns parsed YAML into them, refusing unknown keys and wrong
types with the key's full name, and :func:`read_yaml` parses as DVC does.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from chexnet.core.errors import ChexnetError

# dvc.yaml cannot make a dependency conditional, and a dependency must exist: a file param that names
# no file (or ImageNet's weights, which live in torch's cache) names one of these tracked stand-ins,
# read back here as the plain keywords the library takes ("" for no file).
NO_FILE = "inputs/none"
IMAGENET_FILE = "inputs/imagenet"


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
        return build(annotation, value, key)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ParamsError(f"params: {key} must be a number, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ParamsError(
            f"params: {key} must be {annotation.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def build(cls: Any, raw: Any, prefix: str = "") -> Any:
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
    no_default = dataclasses.MISSING
    required = sorted(
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is no_default and f.default_factory is no_default
    )
    if required:  # a key without a default (an external set's table): named, never a TypeError
        keys = ", ".join(repr(f"{prefix}.{k}" if prefix else k) for k in required)
        raise ParamsError(f"params: {keys} missing at {where}: it has no default, write it")
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


def read_params_file(path: str | Path) -> Any:
    """``params.yaml`` parsed as DVC parses it; a missing file reads as empty (every default)."""
    path = Path(path)
    return read_yaml(path.read_text(encoding="utf-8"), path) if path.exists() else {}


def file_params(params: Any) -> dict[str, str]:
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
