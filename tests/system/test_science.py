"""Tests of the science, not the plumbing: the network learns a planted signal, its heat map points at
it, and the test-time views land where they should.

A planted finding is a bright square at a random cell of a 4 × 4 grid, on noise; a second finding is
noise only. DenseNet121 from random initialisation, fp32 on the CPU, seeded: it must tell the square
from noise (validation AUROC far above chance) in a few epochs of 64 images, and Grad-CAM++ for that
finding must peak inside the square. At 128 px the last dense block's map is 4 × 4, one cell a square.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from chexnet.data.dataset import CachedImages
from chexnet.engine import inference, training
from chexnet.engine.distributed import Context
from chexnet.explain import cam
from chexnet.model.network import CheXNet

SIZE, CELL, N = 128, 32, 96


def _planted(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """``N`` noise images; half carry a bright ``CELL``² square at a random grid cell (finding 0)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 140, (N, SIZE, SIZE), dtype=np.uint8)
    labels = np.zeros((N, 2), np.float32)
    labels[:, 0] = np.arange(N) % 2
    labels[:, 1] = rng.random(N) < 0.5  # a finding with no signal at all
    where = []
    for i in range(N):
        y, x = rng.integers(0, SIZE // CELL, 2) * CELL
        where.append((int(y), int(x)))
        if labels[i, 0]:
            images[i, y : y + CELL, x : x + CELL] = 230
    return images, labels, where


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """A model trained on the planted set (64 train / 32 val images, 6 epochs, ~1 min on 2 cores)."""
    folder = tmp_path_factory.mktemp("planted")
    images, labels, where = _planted(seed=0)
    np.save(folder / "images.npy", images)
    train = CachedImages(folder, np.arange(64), labels[:64])
    val = CachedImages(folder, np.arange(64, N), labels[64:])
    training.seed_everything(0)
    model = CheXNet(2)
    options = training.TrainOptions(epochs=6, batch_size=16, lr=1e-3, seed=0, amp="off",
                                    channels_last=False, memory_efficient=False)  # fmt: skip
    ctx = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    result = training.fit(model, train, val, options, ctx)
    model.load_state_dict(result.best_state)
    return model.eval(), images, labels, where, result


def test_training_learns_a_planted_finding_far_above_chance(learnt):
    model, images, labels, _, result = learnt
    scores = inference.predict_images(model, images[64:], torch.device("cpu"))
    planted = roc_auc_score(labels[64:, 0], scores[:, 0])
    assert planted >= 0.9, f"validation AUROC of the planted square {planted:.3f}"
    assert result.history[-1].train_loss < result.history[0].train_loss  # it learnt, it did not drift
    assert result.best_val_mean_auroc is not None


def test_grad_cam_pp_peaks_inside_the_planted_square(learnt):
    model, images, labels, where, _ = learnt
    val = [i for i in range(64, N) if labels[i, 0] == 1]
    heats, _ = cam.grad_cam_pp_batch(model, images[val], [0] * len(val), target_layer="features[-1]",
                                     device=torch.device("cpu"))  # fmt: skip
    hits = 0
    for heat, i in zip(heats, val, strict=True):
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        top, left = where[i]
        hits += top <= y < top + CELL and left <= x < left + CELL
    # 16 grid cells: chance is 1/16; a map that looks at the square hits nearly always
    assert hits / len(val) >= 0.8, f"the heat map peaked inside the square for {hits} of {len(val)} images"


def test_ten_crop_and_flip_views_land_at_their_pixels():
    size = 224
    big = round(size * 256 / 224)  # 256: arnoweng's resize before the 224 crops
    marks = torch.zeros(1, 3, size, size)
    marks[..., 0, 0] = 1.0  # top-left pixel
    marks[..., size - 1, size - 1] = 2.0  # bottom-right pixel
    flipped = inference.tta_views(marks, "hflip")[1]
    assert flipped[0, 0, 0, size - 1] == 1.0 and flipped[0, 0, size - 1, 0] == 2.0  # mirrored left-right
    views = inference.tta_views(marks, "tencrop")
    enlarged = torch.nn.functional.interpolate(marks, size=(big, big), mode="bilinear", align_corners=False)
    off = big - size
    for view, (y, x) in zip(views[:5], [(0, 0), (0, off), (off, 0), (off, off), (off // 2, off // 2)],
                            strict=True):  # fmt: skip
        assert torch.equal(view, enlarged[..., y : y + size, x : x + size])
    top_left, bottom_right = views[0][0, 0], views[3][0, 0]
    assert top_left[0, 0] > 0 and top_left[-1, -1] == 0  # the top-left crop holds the top-left mark
    assert bottom_right[-1, -1] > 0 and bottom_right[0, 0] == 0  # the bottom-right crop, the other
    for crop, mirror in zip(views[:5], views[5:], strict=True):
        assert torch.equal(mirror, crop.flip(-1))
