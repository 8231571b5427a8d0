"""How an image becomes a network's input: the one home of the input rules a model file can record.

A model trained here takes the seed's input: 8-bit gray repeated to RGB, ``/255``, ImageNet mean and
std, the whole image resized to ``S × S`` (:data:`IMAGENET_INPUT`). torchxrayvision's models take one
channel scaled to ``[-1024, 1024]`` (its ``normalize(img, 255)``), the central square of the image
(``XRayCenterCrop``) resized by scikit-image (``XRayResizer``) (:data:`XRV_INPUT`). Feeding one the
other's input gives wrong probabilities without any error, so a model file records its rule and every
reader applies the record's (``chexnet.model.file``). The fitting itself is decoding's
(:func:`chexnet.data.images.fit_to_square`), so an edit there reruns prepare only.

Both rules share one form, ``x_c = (gray / scale - mean_c) / std_c`` for each of ``channels`` channels,
computed on the device (:func:`chexnet.data.dataset.normalize_batch`); only the fit to a square differs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from chexnet.config.data import RESIZE_RULES
from chexnet.core.errors import ChexnetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# RESIZE_RULES (the params' data.resize): square, the whole image resized to S × S with PIL's bilinear
# filter (antialiased when shrinking), in 8 bits: the seed's transform. center_crop: torchxrayvision's,
# the central min(h, w) square resized by skimage.transform.resize (bilinear, Gaussian antialiasing,
# constant border), in floating point.


class InputSpecError(ChexnetError, ValueError):
    """An input rule this chexnet cannot produce (a damaged record, another tool's preprocessing)."""


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the network's input; every reader applies the model's, never its own."""

    channels: int = 3  # 3: gray repeated to RGB (the seed's convert("RGB")); 1: one gray channel
    scale: float = 255.0  # pixel value / scale: 0..1 for 8-bit images
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: str = "square"  # one of RESIZE_RULES
    # The side S of the square the image is fitted to: the model's record's ``image_size``, carried here
    # so a reader takes the whole rule as one value (None: not known yet, e.g. a seed checkpoint before
    # it is opened at 224 or --image-size). Recorded beside the rule, not in it (``as_dict``).
    size: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.size is not None and self.size < 1:
            problems.append(f"size {self.size} (a positive side)")
        if self.channels not in (1, 3):
            problems.append(f"channels {self.channels} (1 or 3)")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            problems.append(f"{len(self.mean)} means and {len(self.std)} stds for {self.channels} channels")
        if not self.scale > 0 or any(not s > 0 for s in self.std):
            problems.append("a scale or std that is not positive")
        if self.resize not in RESIZE_RULES:
            problems.append(f"resize {self.resize!r} (one of {', '.join(RESIZE_RULES)})")
        if problems:
            raise InputSpecError(f"input rule {self.as_dict()}: {'; '.join(problems)}")

    def sized(self, size: int | None) -> InputSpec:
        """This rule at side ``size``."""
        return replace(self, size=size)

    @property
    def fill(self) -> float:
        """The pixel value that the rule maps to 0: the border value of ``center_crop``'s resize, which
        torchxrayvision applies after normalising (its ``mode='constant'`` pads with 0 there)."""
        return self.mean[0] * self.scale

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "scale": self.scale, "mean": list(self.mean),
                "std": list(self.std), "resize": self.resize}  # fmt: skip

    @classmethod
    def from_dict(cls, document: Any, where: str) -> InputSpec:
        """The rule a record holds; refuses a damaged or foreign one, naming ``where`` it came from."""
        try:
            mean, std = tuple(map(float, document["mean"])), tuple(map(float, document["std"]))
            return cls(
                int(document["channels"]), float(document["scale"]), mean, std, str(document["resize"])
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, InputSpecError):
                raise InputSpecError(f"{where}: {error}") from error
            raise InputSpecError(f"{where}: not an input rule ({type(error).__name__}: {error})") from error


IMAGENET_INPUT = InputSpec()
# torchxrayvision: (2 * gray / 255 - 1) * 1024 == (gray / 255 - 0.5) / (1 / 2048), one channel
XRV_INPUT = InputSpec(1, 255.0, (0.5,), (1.0 / 2048.0,), "center_crop")
