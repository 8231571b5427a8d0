"""The model file: the weights as a plain ``state_dict`` and, beside it, what is needed to use them.

``models/chexnet_model.pth`` is exactly what the seed's ``torch.save(model.state_dict())`` writes, so
either code loads the other's; ``chexnet_model.json`` beside it holds the findings in output order, the
input size, the architecture, the input rule, the precision it ran in and where it came from
(:class:`ModelInfo`). A checkpoint is read with ``torch.load(weights_only=True)`` and loaded strictly: a
key that does not fit is refused, never skipped. Initial weights for training are
:mod:`chexnet.model.initial`'s; foreign checkpoints are :mod:`chexnet.model.sources`'.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chexnet.core import io
from chexnet.core.labels import LabelList, LabelMismatchError, seed_checkpoint_labels
from chexnet.data import cache
from chexnet.data.input_spec import IMAGENET_INPUT, InputSpec, InputSpecError
from chexnet.model.network import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    ArchitectureError,
    CheckpointError,
    architecture,
    build_network,
)

__all__ = ["InputSpec", "ModelInfo", "RunAs", "load_model", "read_model_info", "require_labels", "save_model"]

MODEL_INFO_FORMAT = "chexnet-model/2"
# Version 1 (before 2026-12-02) held the labels and the image size only: read with what chexnet wrote then
# (DenseNet121, ImageNet input); its precision is unknown, so readers run it in fp32 and say so.
READABLE_FORMATS = ("chexnet-model/1", MODEL_INFO_FORMAT)

log = logging.getLogger(__name__)


def model_info_path(model_path: str | Path) -> Path:
    """Where what a model needs to be used right lives: ``chexnet_model.pth`` → ``chexnet_model.json``."""
    return Path(model_path).with_suffix(".json")


@dataclass(frozen=True)
class RunAs:
    """The precision and memory layout a model was trained in, so that its thresholds (chosen on outputs
    in this precision) are applied to outputs in the same precision."""

    dtype: str = "float32"  # float32 | bfloat16 | float16 (the autocast dtype)
    memory_format: str = "contiguous"  # contiguous | channels_last


@dataclass(frozen=True)
class ModelInfo:
    """What travels with a model (``<model>.json``, format ``chexnet-model/2``): its findings in output
    order, the architecture, the input it expects, the precision it was trained in, where it came from
    and how it was trained. The state_dict itself stays in the seed's format; this file sits beside it."""

    labels: LabelList
    image_size: int | None  # None: unknown (a seed checkpoint); predict then needs --image-size
    source: str = "chexnet"  # chexnet (written by train) | seed (no file beside the checkpoint)
    architecture: str = DEFAULT_ARCHITECTURE
    input: InputSpec = IMAGENET_INPUT
    run_as: RunAs | None = None  # None: unknown (a seed checkpoint, a version-1 record): run in fp32
    origin: dict[str, Any] = field(default_factory=dict)  # {"kind": "trained", "initial_weights": ...}
    training: dict[str, Any] = field(default_factory=dict)  # the params it was trained with
    # operating points that came with an imported model ({"source": ..., "values": {label: p}}), used by
    # predict when no thresholds chosen on validation data sit beside the model
    thresholds: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # the record's image size and its input rule travel as one value (InputSpec.size)
        if self.input.size != self.image_size:
            object.__setattr__(self, "input", self.input.sized(self.image_size))

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_INFO_FORMAT,
            "architecture": self.architecture,
            "labels": list(self.labels.names),
            "label_source": self.labels.source,
            "outputs": len(self.labels),
            "output": "sigmoid probability per label, in this order",
            "image_size": self.image_size,
            "input": self.input.as_dict(),
            "run_as": None if self.run_as is None else asdict(self.run_as),
            "origin": self.origin,
            "training": self.training,
            "thresholds": self.thresholds,
        }


def _thresholds_of(document: dict[str, Any], labels: list[str], info_file: Path) -> dict[str, Any] | None:
    """A record's imported operating points: a probability in [0, 1] for exactly its labels, or none."""
    thresholds = document.get("thresholds")
    if thresholds is None:
        return None
    values = thresholds.get("values") if isinstance(thresholds, dict) else None
    good = (
        isinstance(values, dict)
        and set(values) == set(labels)
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
            for v in values.values()
        )
    )
    if not good:
        raise CheckpointError(
            f"{info_file}: 'thresholds' must hold a probability for each of {labels}; it is damaged: "
            "import the model again (chexnet import)"
        )
    values = {label: float(values[label]) for label in labels}
    return {"source": str(thresholds.get("source", "imported")), "values": values}


def _record_parts(document: dict[str, Any], info_file: Path) -> dict[str, Any]:
    """The version-2 fields of a record (defaults for version 1); refuses an unknown version and what
    this chexnet cannot build or feed (another architecture or input rule), naming the field."""
    version = document.get("format")
    if version not in READABLE_FORMATS:
        raise CheckpointError(
            f"{info_file}: model record format {version!r} is not one this chexnet reads "
            f"({', '.join(READABLE_FORMATS)}); it was written by another version: upgrade chexnet"
        )
    if version == "chexnet-model/1":
        return {}
    try:
        name, spec = document["architecture"], document["input"]
        run_as = document["run_as"]
        run_as = None if run_as is None else RunAs(str(run_as["dtype"]), str(run_as["memory_format"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{info_file} is not a complete chexnet-model/2 record ({type(error).__name__}: {error}); "
            "restore it from the run that made the model"
        ) from error
    try:
        architecture(name)
        spec = InputSpec.from_dict(spec, f"{info_file}: 'input'")
    except (ArchitectureError, InputSpecError) as error:
        raise CheckpointError(
            f"{error}; this chexnet builds {', '.join(ARCHITECTURES)} and feeds the rules of "
            "chexnet.data.input_spec: running it otherwise would give wrong probabilities"
        ) from error
    return {
        "architecture": name,
        "input": spec,
        "run_as": run_as,
        "origin": dict(document.get("origin") or {}),
        "training": dict(document.get("training") or {}),
        "thresholds": _thresholds_of(document, list(document.get("labels") or []), info_file),
    }


def save_model(path: str | Path, state: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """The state_dict in the seed's format, and its labels and input size beside it (one JSON file)."""
    # both written to temporary files first and renamed only when both are complete: a failure (a full
    # disk, Ctrl-C) leaves neither new file, never a model beside another model's record
    with io.atomic_path(model_info_path(path)) as record, io.atomic_path(path) as weights:
        io.write_json(record, info.as_dict())
        with weights.open("wb") as handle:  # into an open file: the same bytes for the same tensors
            torch.save(state, handle)


def read_model_info(path: str | Path, n_outputs: int, labels: LabelList | None = None) -> ModelInfo:
    """The checkpoint's label list: ``labels`` if given (``--labels``), else the file beside it, else the
    seed's rule (MultiLabelBinarizer's sorted order, said in one log line). Refuses a list whose size is
    not the head's, and a headless guess."""
    info_file = model_info_path(path)
    image_size = None
    if info_file.is_file():
        document = io.read_json(info_file)
        names = document.get("labels") if isinstance(document, dict) else None
        image_size = document.get("image_size") if isinstance(document, dict) else None
        if not isinstance(names, list) or not (image_size is None or type(image_size) is int):
            raise CheckpointError(
                f"{info_file} is not a model record (no 'labels' list, or a bad 'image_size'); it is "
                "damaged or belongs to something else: restore it from the run that trained the model"
            )
        found = LabelList(tuple(names), str(document.get("label_source", "given")))
        if labels is not None and labels.names != found.names:
            raise LabelMismatchError(
                f"--labels {list(labels.names)} differ from {info_file}: {list(found.names)}; "
                "the file beside the model is what it was trained with: drop --labels"
            )
        info = ModelInfo(found, image_size, **_record_parts(document, info_file))
    elif labels is not None:
        info = ModelInfo(labels, None, source="seed")
    else:
        guessed = seed_checkpoint_labels(n_outputs)
        if guessed is None:
            raise LabelMismatchError(
                f"{path} has {n_outputs} outputs and no label list beside it ({info_file}); its findings "
                "cannot be guessed: give them in the order the model was trained with, --labels "
                "'A,B,...' or --labels FILE"
            )
        log.info(
            "%s has no label list beside it: read as the seed's checkpoint, units in MultiLabelBinarizer's "
            "sorted order (%s); give --labels if its table held other findings",
            path,
            ", ".join(guessed.names),
        )
        info = ModelInfo(guessed, None, source="seed")
    if len(info.labels) != n_outputs:
        raise LabelMismatchError(
            f"{path} has {n_outputs} outputs but its label list has {len(info.labels)}: "
            f"{list(info.labels.names)}"
        )
    return info


def read_state(path: Path) -> dict[str, Any]:
    """A state_dict file, read with ``weights_only=True`` (tensors only: no code from the file runs)."""
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; run the train stage (dvc repro train) first"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, a pickle that is not plain tensors, not a torch file
        raise CheckpointError(
            f"checkpoint {path} cannot be read as a state_dict ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); is it a complete torch.save file?"
        ) from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    return state


# How every state_dict of the backbone begins some of its keys (torchvision's names, current or legacy,
# as the seed saves them): how a file with no record is recognised, and how a file of another backbone
# (VGG, MobileNet: their heads are also called ``classifier``) is refused before its head's 4,096 rows
# are read as findings.
SIGNATURE_KEYS = {"densenet121": "features.denseblock4.", "resnet50": "layer4."}


def state_architecture(state: dict[str, Any], path: Path | str = "the checkpoint") -> str:
    """The backbone a state_dict is for, by its keys; one this chexnet does not build is refused."""
    for name, prefix in SIGNATURE_KEYS.items():
        if any(str(key).startswith(prefix) for key in state):
            return name
    raise CheckpointError(
        f"checkpoint {path} is not a {' or '.join(SIGNATURE_KEYS)} state_dict (it has none of "
        f"{list(SIGNATURE_KEYS.values())}; its first keys: {sorted(state)[:4]}): chexnet builds only "
        "those backbones (docs/models.md)"
    )


def head_outputs(state: dict[str, Any], path: Path, name: str = DEFAULT_ARCHITECTURE) -> int:
    """The number of outputs of a state_dict's ``Linear → Sigmoid`` head (``<head>.0.weight``)."""
    head_name = architecture(name).network.HEAD
    weight = state.get(f"{head_name}.0.weight")
    if weight is None or weight.ndim != 2:
        head = sorted(k for k in state if k.startswith(head_name)) or sorted(state)[:3]
        raise CheckpointError(
            f"checkpoint {path} does not fit {name} with a Linear→Sigmoid head: no "
            f"{head_name}.0.weight; its head keys: {head}"
        )
    return int(weight.shape[0])


def load_state_strictly(model: nn.Module, state: dict[str, Any], path: Path | str) -> None:
    """Every key of the model from ``state`` and nothing else: a partial load is refused, listing keys."""
    expected, found = set(model.state_dict()), set(state)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} does not fit {getattr(model, 'ARCHITECTURE', 'the network')} with a "
            f"Linear→Sigmoid head: missing keys {sorted(expected - found)[:5]}, unexpected keys "
            f"{sorted(found - expected)[:5]} ({len(expected - found)} missing, {len(found - expected)} "
            "unexpected in all)"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # same keys, other shapes (another head size, input channels)
        raise CheckpointError(f"checkpoint {path}: {str(error).strip().splitlines()[-1].strip()}") from error


def load_model(path: str | Path, labels: LabelList | None = None) -> tuple[nn.Module, ModelInfo]:
    """The model at ``path``, built as its record says (architecture, input rule, outputs), loaded
    strictly, with what it needs to be used right (labels, image size, precision). A state_dict with no
    record beside it is read as the seed's (DenseNet121, ImageNet input; ResNet50 by its keys)."""
    path = Path(path)
    state = read_state(path)
    info_file = model_info_path(path)
    name = state_architecture(state, path)
    if info_file.is_file():
        document = io.read_json(info_file)
        name = document.get("architecture", DEFAULT_ARCHITECTURE) if isinstance(document, dict) else name
        name = name if name in ARCHITECTURES else DEFAULT_ARCHITECTURE  # refused by read_model_info
    info = read_model_info(path, head_outputs(state, path, name), labels)
    if info.source == "seed" and name != DEFAULT_ARCHITECTURE:
        info = ModelInfo(info.labels, None, source="seed", architecture=name)
    model = build_network(info.architecture, len(info.labels), info.input)
    load_state_strictly(model, state, path)
    return model, info


def require_labels(
    info: ModelInfo,
    expected: LabelList,
    model_path: str | Path,
    against: str,
    prepared_dir: Path | None = None,
) -> None:
    """Refuse a model whose findings (names or order) are not those of the data it is asked about, or
    whose images are fitted to a square by another rule than the prepared cache's (``prepared_dir``)."""
    if prepared_dir is not None:
        cache.require_rule(prepared_dir, info.input.resize, model_path)
    if info.labels.names != expected.names:
        raise LabelMismatchError(
            f"model {model_path} predicts {list(info.labels.names)}, but {against} has "
            f"{list(expected.names)}; retrain (dvc repro train) or point at the matching model"
        )
