from pathlib import Path

import numpy as np
import pytest
import torch

from chexnet import training
from chexnet.dataset import CachedImages
from chexnet.model import CheXNet


def _cache(tmp_path: Path, n=16, size=32) -> CachedImages:
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 14)) < 0.3).astype(np.float32)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[labels[:, 0] == 1, :8, :8] = 255  # something learnable
    np.save(tmp_path / "images.npy", images)
    return CachedImages(tmp_path, np.arange(n), labels)


def _run(dataset: CachedImages) -> tuple[CheXNet, training.History]:
    training.seed_everything(7)
    model = CheXNet()
    device = torch.device("cpu")
    loader = training.make_loader(dataset, batch_size=8, shuffle=True, seed=7, num_workers=0, device=device)
    val = training.make_loader(dataset, batch_size=8, shuffle=False, seed=7, num_workers=0, device=device)
    return model, training.train(model, loader, val, epochs=1, lr=1e-4, device=device)


def test_same_seed_same_data_same_model(tmp_path: Path):
    dataset = _cache(tmp_path)
    model_a, history_a = _run(dataset)
    model_b, history_b = _run(dataset)
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert history_a.epochs[0].train_loss == history_b.epochs[0].train_loss
    record = history_a.epochs[0]
    assert np.isfinite(record.train_loss) and np.isfinite(record.val_loss)
    assert record.val_mean_auroc is None or 0.0 <= record.val_mean_auroc <= 1.0


def test_non_finite_loss_stops_with_epoch_and_batch(tmp_path: Path):
    dataset = _cache(tmp_path, n=8)
    dataset.labels[:] = float("nan")
    with pytest.raises(training.NonFiniteLossError, match="epoch 1, batch 1"):
        _run(dataset)


def test_predict_returns_probabilities_in_loader_order(tmp_path: Path):
    dataset = _cache(tmp_path, n=10)
    loader = training.make_loader(
        dataset, batch_size=4, shuffle=False, seed=0, num_workers=0, device=torch.device("cpu")
    )
    scores, truth = training.predict(CheXNet(), loader, torch.device("cpu"))
    assert scores.shape == (10, 14) and ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(truth, dataset.labels.numpy())
