"""The model file: the weights as a plain ``state_dict`` and, beside it, what is needed to use them.

``models/chexnet_model.pth`` is exactly what the seed's ``torch.save(model.state_dict())`` writes, so
either code loads the other's; ``chexnet_model.json`` beside it holds the findings in output order, the
input size and the input transform (:class:`ModelInfo`). A checkpoint is read with
``torch.load(weights_only=True)`` and loaded strictly: a key that does not fit is refused, never skipped.
Initial weights for training (ImageNet, a backbone file, a checkpoint to fine-tune) are built here too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.models import densenet121

from chexnet.core import io
from chexnet.core.labels import NIH14, LabelList, LabelMismatchError, seed_checkpoint_labels
from chexnet.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexnet.model.network import IMAGENET_WEIGHTS, CheckpointError, CheXNet, hub_weights_path

MODEL_INFO_FORMAT = "chexnet-model/2"
# Version 1 (before 2026-12-02) held the labels and the image size only: read with what chexnet wrote then
# (DenseNet121, ImageNet input); its precision is unknown, so readers run it in fp32 and say so.
READABLE_FORMATS = ("chexnet-model/1", MODEL_INFO_FORMAT)
ARCHITECTURES = ("densenet121",)  # what this version builds (model/network.py)

log = logging.getLogger(__name__)

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _remap_legacy_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet file uses ``norm.1`` where the modules are named ``norm1``."""
    out = {}
    for key, value in state.items():
        match = _LEGACY_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _load_backbone(model: CheXNet, state: dict[str, Any], source: str) -> None:
    """Load an ImageNet DenseNet121 state_dict into everything but the head."""
    state = {k: v for k, v in _remap_legacy_keys(state).items() if not k.startswith("classifier")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} is not a DenseNet121 state_dict: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def model_info_path(model_path: str | Path) -> Path:
    """Where what a model needs to be used right lives: ``chexnet_model.pth`` → ``chexnet_model.json``."""
    return Path(model_path).with_suffix(".json")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the network's input; every reader applies the record's, never its own."""

    channels: int = 3  # 8-bit grayscale repeated to 3 channels
    scale: float = 255.0  # pixel values / scale: 0..1
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "square"  # the whole image resized to image_size × image_size, no crop

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "scale": self.scale, "mean": list(self.mean),
                "std": list(self.std), "resize": self.resize}  # fmt: skip


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
    architecture: str = "densenet121"
    input: InputSpec = InputSpec()
    run_as: RunAs | None = None  # None: unknown (a seed checkpoint, a version-1 record): run in fp32
    origin: dict[str, Any] = field(default_factory=dict)  # {"kind": "trained", "initial_weights": ...}
    training: dict[str, Any] = field(default_factory=dict)  # the params it was trained with

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
        }


def _record_parts(document: dict[str, Any], info_file: Path) -> dict[str, Any]:
    """The version-2 fields of a record (defaults for version 1); refuses an unknown version and what
    this chexnet cannot build or feed (another architecture or input), naming the field."""
    version = document.get("format")
    if version not in READABLE_FORMATS:
        raise CheckpointError(
            f"{info_file}: model record format {version!r} is not one this chexnet reads "
            f"({', '.join(READABLE_FORMATS)}); it was written by another version: upgrade chexnet"
        )
    if version == "chexnet-model/1":
        return {}
    try:
        architecture = document["architecture"]
        spec = document["input"]
        spec = InputSpec(int(spec["channels"]), float(spec["scale"]), tuple(map(float, spec["mean"])),
                         tuple(map(float, spec["std"])), str(spec["resize"]))  # fmt: skip
        run_as = document["run_as"]
        run_as = None if run_as is None else RunAs(str(run_as["dtype"]), str(run_as["memory_format"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{info_file} is not a complete chexnet-model/2 record ({type(error).__name__}: {error}); "
            "restore it from the run that made the model"
        ) from error
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"{info_file}: architecture {architecture!r}: this chexnet builds {ARCHITECTURES}"
        )
    if spec != InputSpec():
        raise CheckpointError(
            f"{info_file}: the model expects input {spec.as_dict()}, which this chexnet does not produce "
            f"(it feeds {InputSpec().as_dict()}): running it so would give wrong probabilities"
        )
    origin, training = dict(document.get("origin") or {}), dict(document.get("training") or {})
    return {
        "architecture": architecture,
        "input": spec,
        "run_as": run_as,
        "origin": origin,
        "training": training,
    }


def save_model(path: str | Path, state: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """The state_dict in the seed's format, and its labels and input size beside it (one JSON file)."""
    io.write_torch(path, state)
    io.write_json(model_info_path(path), info.as_dict())


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


def _read_state(path: Path) -> dict[str, Any]:
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


def _head_outputs(state: dict[str, Any], path: Path) -> int:
    weight = state.get("classifier.0.weight")
    if weight is None or weight.ndim != 2:
        head = sorted(k for k in state if k.startswith("classifier")) or sorted(state)[:3]
        raise CheckpointError(
            f"checkpoint {path} does not fit DenseNet121 with a Linear→Sigmoid head: no "
            f"classifier.0.weight; its head keys: {head}"
        )
    return int(weight.shape[0])


def _transfer_head(model: CheXNet, state: dict[str, Any], old: LabelList, new: LabelList, path: Path) -> None:
    """Fine-tuning across label lists: rows of findings both lists share (by name) are copied, the
    others keep their fresh initialisation; the log says which."""
    weight, bias = model.classifier[0].weight, model.classifier[0].bias
    shared = [name for name in new.names if name in old.names]
    with torch.no_grad():
        for name in shared:
            weight[new.index(name)] = state["classifier.0.weight"][old.index(name)]
            bias[new.index(name)] = state["classifier.0.bias"][old.index(name)]
    fresh = [name for name in new.names if name not in old.names]
    unused = [name for name in old.names if name not in new.names]
    log.info(
        "fine-tuning from %s: backbone loaded; head rows copied for %d shared findings %s; new, freshly "
        "initialised: %s; in the checkpoint but not in the data (left out): %s",
        path,
        len(shared),
        shared,
        fresh or "none",
        unused or "none",
    )


def build_model(weights: str = "imagenet", labels: LabelList | None = None) -> tuple[CheXNet, bool]:
    """Build the model for ``labels`` and initialise it; returns ``(model, pretrained)``.

    ``weights``: ``imagenet`` tries torchvision's DEFAULT weights (torch hub cache, then download) and,
    when that fails (offline, air-gapped), logs one warning naming the file to place in the hub cache
    and continues from random initialisation; ``none`` starts from random init; any other value is a
    local file: an ImageNet DenseNet121 state_dict (backbone only) or a CheXNet checkpoint, whose head
    rows are matched to ``labels`` by name (its own list beside it, or the seed's sorted order).
    """
    labels = labels or LabelList(NIH14, "nih14")
    model = CheXNet(len(labels))
    if weights == "none":
        return model, False
    if weights == "imagenet":
        try:
            reference = densenet121(weights=IMAGENET_WEIGHTS)
        except Exception as error:  # URLError, OSError, hash mismatch: all mean "not available here"
            log.warning(
                "ImageNet weights for DenseNet121 are not available (%s: %s); training starts from random "
                "initialisation. To use them offline, copy %s to %s",
                type(error).__name__,
                error,
                Path(IMAGENET_WEIGHTS.url).name,
                hub_weights_path(),
            )
            return model, False
        _load_backbone(model, reference.state_dict(), "torchvision DenseNet121")
        return model, True
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"weights: {path} is not a file; use 'imagenet', 'none' or a state_dict path")
    state = _read_state(path)
    if not any(k.startswith("classifier.0.") for k in state):
        _load_backbone(model, state, str(path))
        return model, True
    old = read_model_info(path, _head_outputs(state, path)).labels
    _load_backbone(model, state, str(path))
    _transfer_head(model, state, old, labels, path)
    return model, True


def load_checkpoint(
    model: CheXNet, path: str | Path, labels: LabelList | None = None
) -> tuple[CheXNet, ModelInfo]:
    """Load a CheXNet state_dict (ours or the seed's, same keys) strictly, with its label list.

    ``model`` may be built for any number of outputs: it is rebuilt to the checkpoint's head size.
    """
    path = Path(path)
    state = _read_state(path)
    info = read_model_info(path, _head_outputs(state, path), labels)
    if model.classifier[0].out_features != len(info.labels):
        model = CheXNet(len(info.labels))
    expected, found = set(model.state_dict()), set(state)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} does not fit DenseNet121 with a Linear→Sigmoid head: "
            f"missing keys {sorted(expected - found)[:5]}, unexpected keys {sorted(found - expected)[:5]}"
        )
    model.load_state_dict(state)
    return model, info


def load_model(path: str | Path, labels: LabelList | None = None) -> tuple[CheXNet, ModelInfo]:
    """The model at ``path`` with what it needs to be used right (labels, image size)."""
    return load_checkpoint(CheXNet(), path, labels)


def require_labels(info: ModelInfo, expected: LabelList, model_path: str | Path, against: str) -> None:
    """Refuse a model whose findings (names or order) are not those of the data it is asked about."""
    if info.labels.names != expected.names:
        raise LabelMismatchError(
            f"model {model_path} predicts {list(info.labels.names)}, but {against} has "
            f"{list(expected.names)}; retrain (dvc repro train) or point at the matching model"
        )
