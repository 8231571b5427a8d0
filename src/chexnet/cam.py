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

from chexnet.dataset import normalize_batch
from chexnet.model import CheXNet, LogitsView, resolve_layer


def grad_cam_pp(
    model: CheXNet, image: np.ndarray, class_index: int, *, target_layer: str, device: torch.device
) -> tuple[np.ndarray, float]:
    """Heat map (float32 in 0..1, the image's size) for one uint8 ``S×S`` image, and the probability."""
    model.eval()
    wrapper = LogitsView(model)  # torchcam backpropagates from the pre-sigmoid scores
    layer = resolve_layer(model, target_layer)
    batch = normalize_batch(torch.from_numpy(np.array(image, dtype=np.uint8))[None, None], device)
    with GradCAMpp(wrapper, target_layer=layer, input_shape=tuple(batch.shape[1:])) as extractor:
        logits = wrapper(batch)
        (cam,) = extractor(class_idx=class_index, scores=logits)
    probability = float(torch.sigmoid(logits[0, class_index]).item())
    heat = F.interpolate(cam[None].float(), size=image.shape, mode="bilinear", align_corners=False)[0, 0]
    heat = heat.nan_to_num(0.0).clamp_(0, 1)
    return heat.detach().cpu().numpy(), probability


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heat map over a grayscale image; returns RGB uint8."""
    gray = np.repeat(image[..., None].astype(np.float32) / 255.0, 3, axis=2)
    colour = colormaps["jet"](heat)[..., :3]
    return np.round(255 * ((1 - alpha) * gray + alpha * colour)).clip(0, 255).astype(np.uint8)
