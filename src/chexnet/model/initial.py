"""Where training starts: ImageNet weights, random initialisation, a backbone file, or a model to
fine-tune (ours, the seed's, or one imported by ``chexnet import``), onto the data's label list.

A model file with a record beside it decides the network: its architecture and input rule are kept
(a torchxrayvision model goes on taking one channel in [-1024, 1024]); its head rows are matched to the
new label list by name. The ``architecture`` param only chooses for ImageNet weights and random init.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import get_model

from chexnet.core.labels import NIH14, LabelList
from chexnet.data.input_spec import IMAGENET_INPUT, InputSpec
from chexnet.model.file import (
    ModelInfo,
    head_outputs,
    model_info_path,
    read_model_info,
    read_state,
    state_architecture,
)
from chexnet.model.network import (
    DEFAULT_ARCHITECTURE,
    ArchitectureError,
    CheckpointError,
    architecture,
    build_network,
    hub_weights_path,
)

log = logging.getLogger(__name__)

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def remap_legacy_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet file (and code of its 0.2 era) says ``norm.1`` where the modules
    are named ``norm1``."""
    out = {}
    for key, value in state.items():
        match = _LEGACY_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def load_backbone(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """Load everything but the head from a state_dict of the same backbone; refuses a partial fit."""
    head = f"{model.HEAD}."
    state = {k: v for k, v in remap_legacy_keys(state).items() if not k.startswith(head)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same keys, other shapes (e.g. one input channel against three)
        raise CheckpointError(f"{source}: {str(error).strip().splitlines()[-1].strip()}") from error
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{source} is not a {model.ARCHITECTURE} state_dict: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def transfer_head(
    model: nn.Module, state: dict[str, Any], old: LabelList, new: LabelList, path: Path
) -> None:
    """Fine-tuning across label lists: rows of findings both lists share (by name) are copied, the
    others keep their fresh initialisation; the log says which."""
    weight, bias = model.head.weight, model.head.bias
    prefix = f"{model.HEAD}.0."
    shared = [name for name in new.names if name in old.names]
    with torch.no_grad():
        for name in shared:
            weight[new.index(name)] = state[prefix + "weight"][old.index(name)]
            bias[new.index(name)] = state[prefix + "bias"][old.index(name)]
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


def _imagenet(name: str, labels: LabelList, spec: InputSpec) -> tuple[nn.Module, bool]:
    model = build_network(name, len(labels), spec)
    weights = architecture(name).imagenet
    try:
        reference = get_model(name, weights=weights)
    except Exception as error:  # URLError, OSError, hash mismatch: all mean "not available here"
        log.warning(
            "ImageNet weights for %s are not available (%s: %s); training starts from random "
            "initialisation. To use them offline, copy %s to %s",
            name,
            type(error).__name__,
            error,
            Path(weights.url).name,
            hub_weights_path(weights),
        )
        return model, False
    load_backbone(model, reference.state_dict(), f"torchvision {name}")
    return model, True


def _fed(spec: InputSpec, resize: str | None) -> InputSpec:
    """``spec`` with the fit to a square its training images had, when that is known; no size (the size
    it is trained at is the prepared cache's, which the train stage records)."""
    return dataclasses.replace(spec, size=None, resize=spec.resize if resize is None else resize)


def read_weights_file(path: Path) -> tuple[dict[str, Any], ModelInfo | None, str]:
    """A weights file read once: its state_dict, its record (``None`` for a backbone-only file: no head)
    and its backbone (the record's, else its keys': ResNet50's layer4, else DenseNet121)."""
    state = read_state(path)
    found = state_architecture(state, path)
    has_head = any(k.startswith(f"{architecture(found).network.HEAD}.0.") for k in state)
    info = read_model_info(path, head_outputs(state, path, found)) if has_head else None
    if info is not None and model_info_path(path).is_file():
        found = info.architecture
    return state, info, found


def _agreeing(name: str, found: str, weights: str) -> str:
    """``found`` (the weights file's backbone), refusing an ``architecture`` param that names another."""
    if name != "auto" and found != architecture(name).name:
        raise ArchitectureError(
            f"architecture: {name}, but weights {weights} is a {found} model; set architecture: auto (or "
            f"{found}), or give {name} weights"
        )
    return found


def planned_architecture(weights: str, name: str = "auto") -> str:
    """The backbone a run with these ``weights`` and ``architecture`` params builds; refuses an unknown
    name and a name that is not the weights file's."""
    chosen = DEFAULT_ARCHITECTURE if name == "auto" else architecture(name).name
    if weights in ("none", "imagenet") or not Path(weights).is_file():
        return chosen
    return _agreeing(name, read_weights_file(Path(weights))[2], weights)


def build_model(
    weights: str = "imagenet",
    labels: LabelList | None = None,
    name: str = "auto",
    *,
    resize: str | None = None,
) -> tuple[nn.Module, bool]:
    """Build the model for ``labels`` and initialise it; returns ``(model, pretrained)``.

    ``weights``: ``imagenet`` tries torchvision's DEFAULT weights for backbone ``name`` (torch hub cache,
    then download) and, when that fails (offline, air-gapped), logs one warning naming the file to place
    in the hub cache and continues from random initialisation; ``none`` starts from random init; any
    other value is a local file: an ImageNet state_dict (backbone only) or a model file, whose
    architecture and input rule are kept and whose head rows are matched to ``labels`` by name.
    ``name``: ``auto`` (the file's backbone, else DenseNet121, the seed's), or a backbone that must
    agree with the file's. ``resize``: how the images it will be trained on were fitted to a square (the
    prepared cache's ``data.resize``), built into its input rule so that its record says how it was fed
    (``None``: the rule it starts with).
    """
    labels = labels or LabelList(NIH14, "nih14")
    if weights in ("none", "imagenet"):
        chosen = planned_architecture(weights, name)
        spec = _fed(IMAGENET_INPUT, resize)
        if weights == "none":
            return build_network(chosen, len(labels), spec), False
        return _imagenet(chosen, labels, spec)
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"weights: {path} is not a file; use 'imagenet', 'none' or a state_dict path")
    state, info, found = read_weights_file(path)
    _agreeing(name, found, weights)
    spec = _fed(info.input if info is not None else IMAGENET_INPUT, resize)
    model = build_network(found, len(labels), spec)
    load_backbone(model, state, str(path))
    if info is not None:
        transfer_head(model, state, info.labels, labels, path)
    return model, True
