"""Foreign checkpoints read right: ``chexnet import`` turns one into a chexnet model file.

Each format is one entry of :data:`FORMATS` (how it is recognised, how its keys map to chexnet's
networks, which labels, input rule and size it implies): the seed's ``state_dict``, arnoweng/CheXNet's
``model.pth.tar`` (``module.densenet121.`` keys, torchvision 0.2's ``norm.1`` names), jrzech/
reproduce-chexnet's ``checkpoint`` (a whole pickled torchvision DenseNet), torchxrayvision's DenseNet121
and ResNet50 (pickled objects or state_dicts; one channel in [-1024, 1024], centre crop; operating
points from its registry, vendored in ``xrv_weights.json``) and torchvision's ImageNet files.

Nothing in a file is run: it is read with ``torch.load(weights_only=True)``, whose unpickler builds only
tensors, plain containers and the classes of :func:`allowed_classes` (torch/torchvision modules a whole
model pickle may hold, and inert stand-ins for torchxrayvision's, which is never imported). Any other
class, a ``__reduce__`` payload included, is refused with its name. Every key must map (a partial load is
refused, listing what did not).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import densenet, resnet

from chexnet.core import io
from chexnet.core.labels import NIH14, LabelList, seed_checkpoint_labels
from chexnet.data.input_spec import IMAGENET_INPUT, XRV_INPUT, InputSpec
from chexnet.model.file import ModelInfo, RunAs, load_state_strictly, model_info_path, save_model
from chexnet.model.initial import remap_legacy_keys
from chexnet.model.network import CheckpointError, build_network

log = logging.getLogger(__name__)
XRV_REGISTRY = json.loads((Path(__file__).with_name("xrv_weights.json")).read_text(encoding="utf-8"))
SEED_IMAGE_SIZE = 224


# --- reading without running code --------------------------------------------------------------------
class _XrvDenseNet(nn.Module):
    """Stands in for ``torchxrayvision.models.DenseNet`` while unpickling: holds its state, runs nothing."""


class _XrvResNet(nn.Module):
    """Stands in for ``torchxrayvision.models.ResNet``."""


class _XrvSequential(nn.Sequential):
    """Stands in for torchxrayvision's ``_DenseLayer``, ``_DenseBlock`` and ``_Transition``."""


def allowed_classes() -> list[Any]:
    """What a whole-model pickle of these formats may hold: torchvision's DenseNet/ResNet parts, the
    torch layers they are made of, and torchxrayvision's classes mapped (by name) to inert stand-ins."""
    layers = [nn.Sequential, nn.ModuleList, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
              nn.AdaptiveAvgPool2d, nn.Linear, nn.Sigmoid, nn.Dropout, nn.Identity, set]  # fmt: skip
    vision = [densenet.DenseNet, densenet._DenseBlock, densenet._DenseLayer, densenet._Transition,
              resnet.ResNet, resnet.Bottleneck, resnet.BasicBlock]  # fmt: skip
    xrv = [(_XrvDenseNet, "torchxrayvision.models.DenseNet"), (_XrvResNet, "torchxrayvision.models.ResNet")]
    xrv += [(_XrvSequential, f"torchxrayvision.models.{name}") for name in ("_DenseLayer", "_DenseBlock",
                                                                          "_Transition")]  # fmt: skip
    return [*layers, *vision, *xrv]


def read_checkpoint(path: Path) -> Any:
    """The object in a torch file, built by ``weights_only`` unpickling with :func:`allowed_classes`."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with torch.serialization.safe_globals(allowed_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = named.group(1) if named else str(error).splitlines()[0]
        raise CheckpointError(
            f"{path} holds {what}, which is not a tensor, a plain container or one of the torch/torchvision "
            "classes a checkpoint of a known format may hold: reading it would run code from the file, so "
            "it is refused. Save the model's state_dict (torch.save(model.state_dict(), ...)) and import that"
        ) from error
    except Exception as error:  # truncated zip, not a torch file
        raise CheckpointError(
            f"{path} cannot be read as a torch file ({type(error).__name__}: {error})"
        ) from error


def state_of(obj: Any) -> dict[str, Any]:
    """A module's state_dict, or the dict itself; ``module.`` (DataParallel) prefixes removed."""
    state = obj.state_dict() if isinstance(obj, nn.Module) else obj
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"the file holds a {type(obj).__name__}, not a model or a state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


# --- the formats -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Imported:
    """A foreign checkpoint in chexnet's layout, with what its format says about using it."""

    state: dict[str, torch.Tensor]
    labels: tuple[str, ...]
    architecture: str
    input: InputSpec
    image_size: int
    thresholds: tuple[float, ...] | None = None  # per output, NaN where the model has none
    weights_name: str | None = None


def _with_head(state: dict[str, Any], head: str) -> dict[str, Any]:
    """A plain Linear head (``classifier.weight``) as the seed's ``Linear → Sigmoid`` (``classifier.0.``)."""
    return {re.sub(rf"^{head}\.(weight|bias)$", rf"{head}.0.\1", k): v for k, v in state.items()}


def _outputs(state: dict[str, Any], key: str) -> int:
    return int(state[key].shape[0])


def _seed(obj: Any, labels: tuple[str, ...] | None, path: Path) -> Imported:
    state = state_of(obj)
    if labels is None:
        guessed = seed_checkpoint_labels(_outputs(state, "classifier.0.weight"))
        labels = guessed.names if guessed is not None else ()
    return Imported(state, labels, "densenet121", IMAGENET_INPUT, SEED_IMAGE_SIZE)


def _arnoweng(obj: Any, labels: tuple[str, ...] | None, path: Path) -> Imported:
    state = {k.removeprefix("densenet121."): v for k, v in state_of(obj["state_dict"]).items()}
    return Imported(remap_legacy_keys(state), labels or NIH14, "densenet121", IMAGENET_INPUT, 224)


def _jrzech(obj: Any, labels: tuple[str, ...] | None, path: Path) -> Imported:
    state = remap_legacy_keys(state_of(obj["model"]))
    return Imported(state, labels or NIH14, "densenet121", IMAGENET_INPUT, 224)


def _xrv_name(path: Path, obj: Any, given: str | None) -> str | None:
    """Which published torchxrayvision weights these are: given, the object's own, or the file name."""
    names = XRV_REGISTRY["weights"]
    aliases = {name.split("-")[-1]: name for name in names if name.startswith("densenet121-res224-")}
    for candidate in (given, getattr(obj, "__dict__", {}).get("weights")):
        if candidate:
            if candidate not in names and candidate not in aliases:
                raise CheckpointError(
                    f"--weights-name {candidate!r}: torchxrayvision publishes {list(names)}"
                )
            return aliases.get(candidate, candidate)
    by_file = [name for name, entry in names.items() if entry["file"] == path.name]
    return by_file[0] if by_file else None


def _torchxrayvision(
    obj: Any, labels: tuple[str, ...] | None, path: Path, weights_name: str | None
) -> Imported:
    state = state_of(obj)
    ops = state.pop("op_threshs", None)
    name = _xrv_name(path, obj, weights_name)
    resnet50 = any(k.startswith(("model.layer4.", "layer4.")) for k in state)
    if resnet50:
        state = _with_head({k.removeprefix("model."): v for k, v in state.items()}, "fc")
    else:
        state = _with_head(state, "classifier")
    entry = XRV_REGISTRY["weights"].get(name, {}) if name else {}
    names = labels or tuple(entry.get("labels") or getattr(obj, "__dict__", {}).get("targets")
                            or XRV_REGISTRY["default_pathologies"])  # fmt: skip
    if ops is None and entry.get("op_threshs") is not None:
        ops = torch.tensor([float("nan") if v is None else v for v in entry["op_threshs"]])
    size = entry.get("input_resolution") or (512 if resnet50 else 224)
    thresholds = None if ops is None else tuple(map(float, ops.tolist()))
    return Imported(state, tuple(names), "resnet50" if resnet50 else "densenet121", XRV_INPUT, size,
                    thresholds, name)  # fmt: skip


def _torchvision(obj: Any, labels: tuple[str, ...] | None, path: Path) -> Imported:
    from torchvision.models import DenseNet121_Weights, ResNet50_Weights

    state = remap_legacy_keys(state_of(obj))
    resnet50 = "fc.weight" in state
    weights = ResNet50_Weights.DEFAULT if resnet50 else DenseNet121_Weights.DEFAULT
    categories = list(weights.meta["categories"])
    unique = [f"{c} ({i})" if categories.count(c) > 1 else c for i, c in enumerate(categories)]
    state = _with_head(state, "fc" if resnet50 else "classifier")
    return Imported(state, labels or tuple(unique), "resnet50" if resnet50 else "densenet121", IMAGENET_INPUT,
                    224)  # fmt: skip


def detect(obj: Any) -> str:
    """The format of an unpickled checkpoint, from its structure (``--format`` overrides)."""
    if isinstance(obj, (_XrvDenseNet, _XrvResNet)):
        return "torchxrayvision"
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        return "jrzech"
    wrapped = obj.get("state_dict") if isinstance(obj, dict) else None
    if isinstance(wrapped, dict) and any(
        k.removeprefix("module.").startswith("densenet121.") for k in wrapped
    ):
        return "arnoweng"
    if isinstance(obj, nn.Module | dict):
        state = state_of(obj)
        first = state.get("features.conv0.weight", state.get("conv1.weight", state.get("model.conv1.weight")))
        if first is not None and first.ndim == 4 and first.shape[1] == 1:
            return "torchxrayvision"  # one input channel: its DenseNet/ResNet (state_dict or object)
        if "classifier.0.weight" in state:
            return "seed"
        if "classifier.weight" in state or "fc.weight" in state:
            return "torchvision"
    raise CheckpointError(
        f"cannot tell the format of a file holding a {type(obj).__name__}; give --format, one of "
        f"{', '.join(FORMATS)}"
    )


FORMATS: dict[str, Callable[..., Imported]] = {
    "seed": _seed,
    "arnoweng": _arnoweng,
    "jrzech": _jrzech,
    "torchxrayvision": _torchxrayvision,
    "torchvision": _torchvision,
}


# --- the import --------------------------------------------------------------------------------------
def _kept_outputs(imported: Imported) -> list[int]:
    """Outputs a model was trained on: named, and with an operating point where the format has them
    (torchxrayvision's '' names and NaN op_threshs mark outputs it never learned; they always say 0.5)."""
    ops = imported.thresholds
    return [
        i for i, name in enumerate(imported.labels) if name and (ops is None or ops[i] == ops[i])
    ]  # fmt: skip  (NaN != NaN)


def _narrow(state: dict[str, Any], head: str, rows: list[int]) -> dict[str, Any]:
    index = torch.as_tensor(rows, dtype=torch.long)
    for part in ("weight", "bias"):
        state[f"{head}.0.{part}"] = state[f"{head}.0.{part}"].index_select(0, index).contiguous()
    return state


def _fill_batch_counters(network: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints from PyTorch 0.3 (arnoweng's) have no BatchNorm ``num_batches_tracked``; it is a
    counter used only when training without momentum, so it starts at 0 as torch itself does."""
    missing = [k for k in network.state_dict() if k.endswith("num_batches_tracked") and k not in state]
    return {**state, **{k: torch.tensor(0, dtype=torch.long) for k in missing}}


def import_checkpoint(
    source: Path, out: Path, *, fmt: str = "auto", labels: tuple[str, ...] | None = None,
    weights_name: str | None = None,
) -> ModelInfo:  # fmt: skip
    """Read ``source`` in format ``fmt`` (``auto``: detected), check every key maps, and write the model
    file ``out`` (state_dict + record) with the labels, input rule, size and thresholds the format
    implies. Returns the record."""
    if fmt != "auto" and fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r}: one of auto, {', '.join(FORMATS)}")
    if model_info_path(source).is_file():
        raise CheckpointError(
            f"{source} is already a chexnet model file ({model_info_path(source)} beside it)"
        )
    obj = read_checkpoint(source)
    fmt = detect(obj) if fmt == "auto" else fmt
    try:
        extra = {"weights_name": weights_name} if fmt == "torchxrayvision" else {}
        imported = FORMATS[fmt](obj, labels, source, **extra)
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{source} is not a {fmt} checkpoint ({type(error).__name__}: {error})"
        ) from error
    head = build_network(imported.architecture, 1).HEAD
    outputs = int(imported.state.get(f"{head}.0.weight", torch.empty(0)).shape[0])
    if len(imported.labels) != outputs:
        raise CheckpointError(
            f"{source} ({fmt}) has {outputs} outputs but {len(imported.labels)} labels "
            f"{list(imported.labels) or ''}: give its findings in output order with --labels"
        )
    kept = _kept_outputs(imported)
    names = tuple(imported.labels[i] for i in kept)
    network = build_network(imported.architecture, len(kept), imported.input)
    state = _fill_batch_counters(network, _narrow(dict(imported.state), head, kept))
    load_state_strictly(network, state, source)
    thresholds = None
    if imported.thresholds is not None:
        values = {names[j]: imported.thresholds[i] for j, i in enumerate(kept)}
        where = imported.weights_name or "the file"
        thresholds = {"source": f"{fmt} operating points (op_threshs of {where}), on the sigmoid "
                      "probability: positive at p >= threshold", "values": values}  # fmt: skip
    left_out = [name or f"output {i}" for i, name in enumerate(imported.labels) if i not in kept]
    origin = {"kind": "imported", "format": fmt, "file": source.name, "sha256": io.sha256_of(source),
              "weights_name": imported.weights_name, "outputs_left_out": left_out}  # fmt: skip
    info = ModelInfo(LabelList(names, "imported"), imported.image_size, architecture=imported.architecture,
                     input=imported.input, run_as=RunAs("float32", "contiguous"), origin=origin,
                     thresholds=thresholds)  # fmt: skip
    save_model(out, network.state_dict(), info)
    log.info(
        "imported %s (%s, %s, %d outputs%s) as %s", source, fmt, imported.architecture, len(names),
        f"; left out, never trained: {', '.join(left_out)}" if left_out else "", out,
    )  # fmt: skip
    return info
