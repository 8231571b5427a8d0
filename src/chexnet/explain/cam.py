"""Grad-CAM++ heat maps (torchcam) over a chosen layer, and their overlays.

The seed hooks ``features[-1]`` of DenseNet121 (the last BatchNorm, before torchvision's final ReLU).
Gradients are taken from the logits (the score before the sigmoid), as Grad-CAM++ is defined on
pre-activation class scores. Hooks are removed when the extractor's ``with`` block ends, also on error.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torchcam.methods import GradCAMpp

from chexnet.data.dataset import normalize_batch
from chexnet.engine.inference import FP32, Precision, gray_array
from chexnet.model.network import LogitsView, Network, resolve_layer


def grad_cam_pp_batch(
    model: Network,
    images: np.ndarray,
    class_indices: list[int],
    *,
    target_layer: str,
    device: torch.device,
    precision: Precision = FP32,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM++ for a batch: image ``i`` (gray ``S×S``, fed by the model's input rule) explained for
    class ``class_indices[i]``.

    Returns heat maps ``B×S×S`` in 0..1 and each image's probability for its class. The hooks live only
    inside this call (torchcam's context manager removes them, also on error), so explaining hundreds
    of images keeps memory flat.
    """
    model.eval()
    wrapper = LogitsView(model)  # torchcam backpropagates from the pre-sigmoid scores
    layer = resolve_layer(model, target_layer)
    pixels = torch.from_numpy(gray_array(images))
    batch = normalize_batch(pixels[:, None], device, model.input_spec, channels_last=precision.channels_last)
    extractor = GradCAMpp(wrapper, target_layer=layer, input_shape=tuple(batch.shape[1:]))
    with extractor, precision.autocast(device):
        logits = wrapper(batch)
        (cams,) = extractor(class_idx=list(class_indices), scores=logits)
    logits = logits.detach().float()
    picked = logits.gather(1, torch.as_tensor(class_indices, device=logits.device)[:, None])[:, 0]
    heats = F.interpolate(cams[:, None].float(), size=images.shape[1:], mode="bilinear", align_corners=False)
    model.zero_grad(set_to_none=True)  # the backward pass left gradients on the weights
    return heats[:, 0].nan_to_num(0.0).clamp_(0, 1).cpu().numpy(), torch.sigmoid(picked).cpu().numpy()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heat map over a grayscale image (0..255); returns RGB uint8."""
    gray = np.repeat(np.clip(image[..., None].astype(np.float32), 0, 255) / 255.0, 3, axis=2)
    colour = colormaps["jet"](heat)[..., :3]
    return np.round(255 * ((1 - alpha) * gray + alpha * colour)).clip(0, 255).astype(np.uint8)
