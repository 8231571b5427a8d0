"""The CheXNet model: torchvision DenseNet121 with the seed's head, weights and checkpoint loading.

The module tree is torchvision's DenseNet121 with ``classifier = Sequential(Linear(1024, 14), Sigmoid())``
exactly as in the seed, so a ``state_dict`` saved by the seed's code (keys ``features.*``,
``classifier.0.*``) loads unchanged, and ours loads in the seed's code. ``model(x)`` returns
probabilities like the seed's; training uses :meth:`CheXNet.logits` with ``BCEWithLogitsLoss``, which is
the same loss as ``BCELoss(sigmoid(z))`` but does not overflow in float16/bfloat16.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet, DenseNet121_Weights, densenet121

from chexnet.errors import ChexnetError
from chexnet.labels import NUM_CLASSES

log = logging.getLogger(__name__)

# torchvision's DenseNet121 ImageNet file; its name in the torch hub cache tells users what to place.
IMAGENET_WEIGHTS = DenseNet121_Weights.DEFAULT
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class CheckpointError(ChexnetError, ValueError):
    """A checkpoint that does not fit the model; the message says which keys differ."""


class CheXNet(DenseNet):
    """DenseNet121 (growth 32, blocks 6-12-24-16) with the seed's ``Linear → Sigmoid`` head."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
        self.classifier = nn.Sequential(nn.Linear(self.classifier.in_features, num_classes), nn.Sigmoid())
        # torchvision applies this ReLU as a function; as a module (no parameters, so the state_dict is
        # unchanged) it can be a Grad-CAM target: "final_relu", the post-ReLU features.
        self.final_relu = nn.ReLU()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the sigmoid: what the loss and Grad-CAM++ use."""
        # Not in place (torchvision uses inplace=True): a Grad-CAM hook on features[-1] must keep the
        # pre-ReLU activations it recorded.
        features = self.final_relu(self.features(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        return self.classifier[0](pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[1](self.logits(x))


class LogitsView(nn.Module):
    """``model.logits`` as ``forward``: what DDP, ``torch.compile`` and torchcam wrap and call.

    It owns no parameters of its own (its state_dict is the model's under ``model.``); save the
    wrapped :class:`CheXNet` itself.
    """

    def __init__(self, model: CheXNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


def hub_weights_path() -> Path:
    """Where torchvision looks for the ImageNet file before downloading it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


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


def build_model(weights: str = "imagenet") -> tuple[CheXNet, bool]:
    """Build the model and initialise its backbone; returns ``(model, pretrained)``.

    ``weights``: ``imagenet`` tries torchvision's DEFAULT weights (torch hub cache, then download) and,
    when that fails (offline, air-gapped), logs one warning naming the file to place in the hub cache
    and continues from random initialisation; ``none`` starts from random init; any other value is a
    local file: an ImageNet DenseNet121 state_dict (backbone only) or a CheXNet checkpoint (all).
    """
    model = CheXNet()
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
    state = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("classifier.0.") for k in state):
        load_checkpoint(model, path)
    else:
        _load_backbone(model, state, str(path))
    return model, True


def load_checkpoint(model: CheXNet, path: str | Path) -> CheXNet:
    """Load a CheXNet state_dict (ours or the seed's, same keys) strictly; say which keys differ."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; run the train stage (dvc repro train) first"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    expected, found = set(model.state_dict()), set(state)
    if expected != found:
        raise CheckpointError(
            f"checkpoint {path} does not fit DenseNet121 with a Linear→Sigmoid head: "
            f"missing keys {sorted(expected - found)[:5]}, unexpected keys {sorted(found - expected)[:5]}"
        )
    model.load_state_dict(state)
    return model


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present (the seed's choice), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_layer(model: nn.Module, spec: str) -> nn.Module:
    """Find a submodule from a name like ``features[-1]`` or ``features.denseblock4``."""
    module: Any = model
    for part in spec.split("."):
        match = re.fullmatch(r"(\w+)((?:\[-?\d+\])*)", part)
        if not match:
            raise ValueError(f"target layer {spec!r}: cannot parse {part!r}")
        try:
            module = getattr(module, match.group(1))
            for index in re.findall(r"\[(-?\d+)\]", match.group(2)):
                module = module[int(index)]
        except (AttributeError, IndexError, TypeError) as error:
            raise ValueError(f"target layer {spec!r} does not exist in the model ({error})") from error
    if not isinstance(module, nn.Module):
        raise ValueError(f"target layer {spec!r} is not a module")
    return module
