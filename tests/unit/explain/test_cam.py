import numpy as np
import pytest
import torch

from chexnet.explain import cam
from chexnet.model.network import CheXNet


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_grad_cam_pp_map_and_probability():
    torch.manual_seed(0)
    model = CheXNet()
    image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    heats, probabilities = cam.grad_cam_pp_batch(
        model, image[None], [3], target_layer="features[-1]", device=torch.device("cpu")
    )
    heat, probability = heats[0], float(probabilities[0])
    assert heat.shape == (64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1
    with torch.no_grad():
        expected = model.eval()(cam.normalize_batch(torch.from_numpy(image)[None, None], "cpu"))[0, 3].item()
    assert probability == pytest.approx(expected, abs=1e-5)
    assert _hook_count(model) == 0
    blended = cam.overlay(image, heat)
    assert blended.shape == (64, 64, 3) and blended.dtype == np.uint8


def test_hooks_are_removed_after_an_exception():
    model = CheXNet()
    image = np.zeros((32, 32), np.uint8)
    with pytest.raises((IndexError, RuntimeError)):  # raised inside torchcam, after the hooks were registered
        cam.grad_cam_pp_batch(
            model, image[None], [99], target_layer="features[-1]", device=torch.device("cpu")
        )
    assert _hook_count(model) == 0


def test_bf16_channels_last_maps_agree_with_fp32_ones():
    """evaluate and explain run the model as trained (bf16 and channels_last on a CPU that has bf16):
    the maps and probabilities stay those of fp32, within bf16's precision."""
    from chexnet.engine.inference import Precision

    torch.manual_seed(0)
    model = CheXNet()
    model.eval()
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    cpu = torch.device("cpu")
    plain, p_plain = cam.grad_cam_pp_batch(
        model, images, [0, 3, 5, 9], target_layer="features[-1]", device=cpu
    )
    fast = Precision(torch.bfloat16, channels_last=True)
    model.to(memory_format=torch.channels_last)
    quick, p_quick = cam.grad_cam_pp_batch(
        model, images, [0, 3, 5, 9], target_layer="features[-1]", device=cpu, precision=fast
    )
    assert quick.dtype == np.float32 and p_quick.dtype == np.float32
    np.testing.assert_allclose(p_quick, p_plain, atol=0.02)
    for a, b in zip(plain, quick, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert _hook_count(model) == 0
