"""The CheXNet network: torchvision DenseNet121 with the seed's head, and its Grad-CAM target layers.

The module tree is torchvision's DenseNet121 with ``classifier = Sequential(Linear(1024, 14), Sigmoid())``
exactly as in the seed, so a ``state_dict`` saved by the seed's code (keys ``features.*``,
``classifier.0.*``) loads unchanged, and ours loads in the seed's code. ``model(x)`` returns
probabilities like the seed's; training uses :meth:`CheXNet.logits` with ``BCEWithLogitsLoss``, which is
the same loss as ``BCELoss(sigmoid(z))`` but does not overflow in float16/bfloat16. Saving and loading
it with what it needs to be used right is :mod:`chexnet.model.file`'s.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet, DenseNet121_Weights
from torchvision.models.densenet import _DenseLayer

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import NIH14

log = logging.getLogger(__name__)

# torchvision's DenseNet121 ImageNet file; its name in the torch hub cache tells users what to place.
IMAGENET_WEIGHTS = DenseNet121_Weights.DEFAULT


class CheckpointError(ChexnetError, ValueError):
    """A checkpoint that does not fit the model; the message says which keys differ."""


class CheXNet(DenseNet):
    """DenseNet121 (growth 32, blocks 6-12-24-16) with the seed's ``Linear → Sigmoid`` head."""

    def __init__(self, num_classes: int = len(NIH14)):
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


def set_memory_efficient(model: CheXNet, on: bool) -> None:
    """Recompute each dense layer's concatenation in the backward pass instead of keeping it
    (torchvision's ``memory_efficient``): the same weights and results, a fraction of the activation
    memory, some extra compute. The state_dict is unchanged."""
    for module in model.modules():
        if isinstance(module, _DenseLayer):
            module.memory_efficient = on


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


class LayerError(ChexnetError, ValueError):
    """A Grad-CAM target layer (``explain.target_layer``, ``--layer``) that names no usable layer."""


def resolve_layer(model: nn.Module, spec: str) -> nn.Module:
    """Find a submodule from a name like ``features[-1]`` or ``features.denseblock4``."""
    module: Any = model
    hint = "e.g. features[-1] (the seed's), final_relu or features.denseblock4"
    for part in spec.split("."):
        match = re.fullmatch(r"(\w+)((?:\[-?\d+\])*)", part)
        if not match:
            raise LayerError(f"target layer {spec!r}: cannot parse {part!r}; {hint}")
        try:
            module = getattr(module, match.group(1))
            for index in re.findall(r"\[(-?\d+)\]", match.group(2)):
                module = module[int(index)]
        except (AttributeError, IndexError, TypeError, KeyError) as error:
            raise LayerError(
                f"target layer {spec!r} does not exist in the model ({error}); {hint}"
            ) from error
    if not isinstance(module, nn.Module):
        raise LayerError(f"target layer {spec!r} is not a layer of the model; {hint}")
    return module


def check_target_layer(model: nn.Module, spec: str, image_size: int = 64) -> None:
    """Refuse, before any work, a layer that does not exist or whose output is no spatial map
    (``classifier``, a Linear, gives Grad-CAM++ nothing to localise): one tiny forward pass on CPU."""
    layer = resolve_layer(model, spec)
    shapes: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ()))))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        handle.remove()
        model.train(was_training)
    if not shapes or len(shapes[-1]) != 4:
        what = f"gives an output of shape {list(shapes[-1])}" if shapes else "is never run by the model"
        raise LayerError(
            f"target layer {spec!r} {what}, not a spatial feature map (batch × channels × height × width); "
            "Grad-CAM++ needs a convolutional layer, e.g. features[-1] (the seed's) or final_relu"
        )
