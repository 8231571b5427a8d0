"""The networks: torchvision DenseNet121 with the seed's head (the default), ResNet50 with the same head,
their registry (:data:`ARCHITECTURES`, the one home of the names) and Grad-CAM target layers.

The module tree is torchvision's DenseNet121 with ``classifier = Sequential(Linear(1024, 14), Sigmoid())``
exactly as in the seed, so a ``state_dict`` saved by the seed's code (keys ``features.*``,
``classifier.0.*``) loads unchanged, and ours loads in the seed's code. ``model(x)`` returns
probabilities like the seed's; training uses :meth:`CheXNet.logits` with ``BCEWithLogitsLoss``, which is
the same loss as ``BCELoss(sigmoid(z))`` but does not overflow in float16/bfloat16. Saving and loading
it with what it needs to be used right is :mod:`chexnet.model.file`'s.

Every network here has the same face: ``logits(x)``, ``forward(x)`` (probabilities), ``head`` (the Linear
of its ``Linear → Sigmoid`` head), ``input_spec`` (the input rule it is fed by, set from its model record)
and the class attributes ``ARCHITECTURE``, ``HEAD`` (the head's name in the state_dict) and
``DEFAULT_LAYER`` (its Grad-CAM++ target for ``explain.target_layer: auto``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet, DenseNet121_Weights, ResNet, ResNet50_Weights, WeightsEnum
from torchvision.models.densenet import _DenseLayer
from torchvision.models.resnet import Bottleneck

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import NIH14
from chexnet.data.input_spec import IMAGENET_INPUT, InputSpec

log = logging.getLogger(__name__)

# torchvision's DenseNet121 ImageNet file; its name in the torch hub cache tells users what to place.
IMAGENET_WEIGHTS = DenseNet121_Weights.DEFAULT


class CheckpointError(ChexnetError, ValueError):
    """A checkpoint that does not fit the model; the message says which keys differ."""


class CheXNet(DenseNet):
    """DenseNet121 (growth 32, blocks 6-12-24-16) with the seed's ``Linear → Sigmoid`` head.

    ``in_channels=1`` replaces the first convolution (torchxrayvision's DenseNet is this network with
    one input channel)."""

    ARCHITECTURE, HEAD, DEFAULT_LAYER = "densenet121", "classifier", "features[-1]"

    def __init__(self, num_classes: int = len(NIH14), in_channels: int = 3):
        super().__init__(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
        self.classifier = nn.Sequential(nn.Linear(self.classifier.in_features, num_classes), nn.Sigmoid())
        if in_channels != 3:
            self.features.conv0 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # torchvision applies this ReLU as a function; as a module (no parameters, so the state_dict is
        # unchanged) it can be a Grad-CAM target: "final_relu", the post-ReLU features.
        self.final_relu = nn.ReLU()
        self.input_spec: InputSpec = IMAGENET_INPUT

    @property
    def head(self) -> nn.Linear:
        return self.classifier[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the sigmoid: what the loss and Grad-CAM++ use."""
        # Not in place (torchvision uses inplace=True): a Grad-CAM hook on features[-1] must keep the
        # pre-ReLU activations it recorded.
        features = self.final_relu(self.features(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        return self.classifier[0](pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[1](self.logits(x))


class CheXResNet50(ResNet):
    """torchvision's ResNet50 (bottlenecks 3-4-6-3) with the same ``Linear → Sigmoid`` head as ``fc``.

    Its state_dict is torchvision's with ``fc.0.*`` for ``fc.*``; torchxrayvision's ResNet50 is this
    network with one input channel. Grad-CAM++'s default target is ``layer4`` (the last block's output,
    after its ReLU). It has no memory-saving switch (``train.memory_efficient`` applies to DenseNet)."""

    ARCHITECTURE, HEAD, DEFAULT_LAYER = "resnet50", "fc", "layer4"

    def __init__(self, num_classes: int = len(NIH14), in_channels: int = 3):
        super().__init__(Bottleneck, [3, 4, 6, 3])
        self.fc = nn.Sequential(nn.Linear(self.fc.in_features, num_classes), nn.Sigmoid())
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.input_spec: InputSpec = IMAGENET_INPUT

    @property
    def head(self) -> nn.Linear:
        return self.fc[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc[0](torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc[1](self.logits(x))


Network = CheXNet | CheXResNet50


@dataclass(frozen=True)
class Architecture:
    """A backbone by name: its network class, torchvision's ImageNet weights for it and the layers a
    user may name for Grad-CAM++."""

    network: type[CheXNet] | type[CheXResNet50]
    imagenet: WeightsEnum
    layer_hint: str

    @property
    def name(self) -> str:
        return self.network.ARCHITECTURE


ARCHITECTURES: dict[str, Architecture] = {
    "densenet121": Architecture(
        CheXNet, DenseNet121_Weights.DEFAULT, "features[-1] (the seed's), final_relu or features.denseblock4"
    ),
    "resnet50": Architecture(CheXResNet50, ResNet50_Weights.DEFAULT, "layer4, layer3 or layer4[-1].conv3"),
}
DEFAULT_ARCHITECTURE = "densenet121"  # the seed's


class ArchitectureError(ChexnetError, ValueError):
    """A backbone name (``architecture``, a model record's) that this chexnet does not build."""


def architecture(name: str) -> Architecture:
    """The backbone called ``name``; an unknown name is refused with the known ones."""
    if name not in ARCHITECTURES:
        raise ArchitectureError(
            f"architecture {name!r} is not one chexnet builds: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


def build_network(name: str, num_classes: int, spec: InputSpec = IMAGENET_INPUT) -> CheXNet | CheXResNet50:
    """A freshly initialised network of backbone ``name`` for ``num_classes`` outputs, fed by ``spec``."""
    network = architecture(name).network(num_classes, in_channels=spec.channels)
    network.input_spec = spec
    return network


def set_memory_efficient(model: nn.Module, on: bool) -> None:
    """Recompute each dense layer's concatenation in the backward pass instead of keeping it
    (torchvision's ``memory_efficient``): the same weights and results, a fraction of the activation
    memory, some extra compute. The state_dict is unchanged; a ResNet has no such layers (no-op)."""
    for module in model.modules():
        if isinstance(module, _DenseLayer):
            module.memory_efficient = on


class LogitsView(nn.Module):
    """``model.logits`` as ``forward``: what DDP, ``torch.compile`` and torchcam wrap and call.

    It owns no parameters of its own (its state_dict is the model's under ``model.``); save the
    wrapped :class:`CheXNet` itself.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


def hub_weights_path(weights: WeightsEnum = IMAGENET_WEIGHTS) -> Path:
    """Where torchvision looks for an ImageNet file before downloading it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


class LayerError(ChexnetError, ValueError):
    """A Grad-CAM target layer (``explain.target_layer``, ``--layer``) that names no usable layer."""


def resolve_layer(model: nn.Module, spec: str) -> nn.Module:
    """Find a submodule from a name like ``features[-1]`` or ``features.denseblock4``; ``auto`` is the
    network's own default (``DEFAULT_LAYER``: DenseNet121's ``features[-1]``, ResNet50's ``layer4``)."""
    module: Any = model
    name = getattr(model, "ARCHITECTURE", None)
    hint = f"e.g. auto or {ARCHITECTURES[name].layer_hint}" if name in ARCHITECTURES else "e.g. auto"
    spec = layer_name(model, spec)
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


def layer_name(model: nn.Module, spec: str) -> str:
    """``spec`` with ``auto`` spelled out as the network's own layer (what reports should say)."""
    return getattr(model, "DEFAULT_LAYER", "features[-1]") if spec == "auto" else spec


def check_target_layer(model: nn.Module, spec: str, image_size: int = 64) -> str:
    """Refuse, before any work, a layer that does not exist or whose output is no spatial map
    (``classifier``, a Linear, gives Grad-CAM++ nothing to localise): one tiny forward pass on CPU.
    Returns the layer's name (``auto`` spelled out)."""
    layer = resolve_layer(model, spec)
    shapes: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ()))))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters())
        channels = getattr(getattr(model, "input_spec", None), "channels", 3)
        with torch.no_grad():
            model(torch.zeros(1, channels, image_size, image_size, device=parameter.device,
                              dtype=parameter.dtype))  # fmt: skip
    finally:
        handle.remove()
        model.train(was_training)
    if not shapes or len(shapes[-1]) != 4:
        what = f"gives an output of shape {list(shapes[-1])}" if shapes else "is never run by the model"
        raise LayerError(
            f"target layer {spec!r} {what}, not a spatial feature map (batch × channels × height × width); "
            "Grad-CAM++ needs a convolutional layer, e.g. auto (the network's own: features[-1] for "
            "DenseNet121, layer4 for ResNet50)"
        )
    return layer_name(model, spec)
