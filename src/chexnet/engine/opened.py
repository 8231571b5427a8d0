"""A trained model opened for use: the one place that decides how every path runs a model file.

``chexnet predict``, ``chexnet explain``, ``chexnet serve``, and the evaluate, explain and external
stages all need the same things of a model file: the network built as its record says and loaded
strictly, the record itself, the precision it was trained in (its thresholds were chosen on outputs in
that precision), the image size it takes, the Grad-CAM++ layer when heat maps are asked for, and the
thresholds by :mod:`chexnet.model.thresholds`' one rule. Each of them used to decide these on its own
(four copies, which disagreed on the thresholds); :meth:`LoadedModel.open` decides them once, with every
refusal before any work, and the model file's sha256 is read once for the thresholds and the ONNX
checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelList
from chexnet.data.input_spec import InputSpec
from chexnet.engine.inference import Precision, resolve_device
from chexnet.model.file import ModelInfo, load_model
from chexnet.model.network import check_target_layer
from chexnet.model.thresholds import OperatingPoints, operating_points

log = logging.getLogger(__name__)

SEED_IMAGE_SIZE = 224  # the seed trains at 224 px; a seed checkpoint carries no size of its own
MIN_IMAGE_SIZE = 32  # DenseNet121's five halvings leave no spatial map below this


def image_size_of(info: ModelInfo, model_path: Path, asked: int | None = None) -> int:
    """The size the model is fed at: its record's; a seed checkpoint (no record) takes ``asked`` or the
    seed's 224. Asking a recorded model for another size is refused: its outputs only mean what they
    meant at its own."""
    if asked is not None and asked < MIN_IMAGE_SIZE:
        raise ChexnetError(f"--image-size must be {MIN_IMAGE_SIZE} or more, got {asked}")
    if info.image_size is not None:
        if asked is not None and asked != info.image_size:
            raise ChexnetError(
                f"--image-size {asked}: model {model_path} was trained at {info.image_size} px "
                f"({model_path.with_suffix('.json')}); its findings are only right at that size: drop "
                "--image-size"
            )
        return info.image_size
    if asked is not None:
        return asked
    log.info(
        "%s carries no image size: using the seed's %d px (--image-size to change)",
        model_path,
        SEED_IMAGE_SIZE,
    )
    return SEED_IMAGE_SIZE


@dataclass(frozen=True)
class LoadedModel:
    """A model file ready to run: the network on its device in its precision and memory layout, with
    what every caller needs beside it. Build it with :meth:`open`."""

    path: Path
    network: nn.Module
    info: ModelInfo
    device: torch.device
    precision: Precision
    spec: InputSpec  # how an image becomes its input, at the size it is fed at (spec.size)
    operating_points: OperatingPoints | None  # None: not asked for (the evaluate stage chooses them)
    layer: str | None  # the Grad-CAM++ layer, spelled out; None: no heat maps asked for
    sha256: str  # the model file's: what thresholds.json and an ONNX export name their model by

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        labels: LabelList | None = None,
        thresholds: str | Path | None = None,
        with_thresholds: bool = True,
        layer: str | None = None,
        image_size: int | None = None,
    ) -> LoadedModel:
        """Open ``path`` (ours, or the seed's format with ``labels``) for use on ``device``.

        ``thresholds`` names a file (it must exist); otherwise the module rule of
        :func:`chexnet.model.thresholds.operating_points` applies (``thresholds.json`` beside the model,
        the record's, 0.5 with a warning). ``with_thresholds=False`` reads none (the stage that chooses
        them). ``layer`` (``auto`` or a name) is checked for a spatial map before any work."""
        path = Path(path)
        device = device if isinstance(device, torch.device) else resolve_device(device)
        network, info = load_model(path, labels)
        size = image_size_of(info, path, image_size)
        digest, chosen = io.sha256_of(path), None
        if with_thresholds:
            chosen = operating_points(path, info, thresholds, model_sha256=digest)
        spelled = check_target_layer(network, layer) if layer is not None else None
        precision = Precision.recorded(info.run_as, device)  # the thresholds were chosen on outputs in it
        network = network.to(device, memory_format=precision.memory_format).eval()
        spec = info.input.sized(size)
        return cls(path, network, info, device, precision, spec, chosen, spelled, digest)

    @property
    def image_size(self) -> int:
        """The side it is fed at (its record's; a seed checkpoint's 224 or ``--image-size``)."""
        return self.spec.size

    @property
    def labels(self) -> list[str]:
        """The model's findings, in output order."""
        return list(self.info.labels.names)

    @property
    def thresholds(self) -> dict[str, float]:
        """The operating point of each finding (opened without thresholds: an error, not a guess)."""
        if self.operating_points is None:
            raise ChexnetError(f"{self.path} was opened without thresholds")
        return self.operating_points.values
