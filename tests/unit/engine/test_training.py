from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chexnet.data.dataset import CachedImages
from chexnet.engine import inference, resume, state, training
from chexnet.engine import loss as training_loss
from chexnet.model.network import CheXNet, set_memory_efficient

CPU = torch.device("cpu")


def _cache(tmp_path: Path, n=16, size=32) -> CachedImages:
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 14)) < 0.3).astype(np.float32)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[labels[:, 0] == 1, :8, :8] = 255  # something learnable
    np.save(tmp_path / "images.npy", images)
    return CachedImages(tmp_path, np.arange(n), labels)


def _fit(
    dataset: CachedImages, checkpoint: Path | None = None, **overrides
) -> tuple[CheXNet, state.FitResult]:
    training.seed_everything(7)
    model = CheXNet()
    options = training.TrainOptions(**({"epochs": 1, "batch_size": 8, "seed": 7} | overrides))
    result = training.fit(model, dataset, dataset, options, checkpoint=checkpoint, run_fingerprint="test")
    return model, result


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_data_same_model(tmp_path: Path):
    dataset = _cache(tmp_path)
    model_a, result_a = _fit(dataset)
    model_b, result_b = _fit(dataset)
    assert _same_weights(model_a.state_dict(), model_b.state_dict())
    assert result_a.history == [
        r.__class__(**(vars(r) | {"seconds": s.seconds, "images_per_second": s.images_per_second}))
        for r, s in zip(result_b.history, result_a.history, strict=True)
    ]
    record = result_a.history[0]
    assert np.isfinite(record.train_loss) and np.isfinite(record.val_loss)
    assert record.val_mean_auroc is None or 0.0 <= record.val_mean_auroc <= 1.0


def test_resuming_from_a_checkpoint_ends_with_the_same_model(tmp_path: Path):
    dataset = _cache(tmp_path)
    uninterrupted, full = _fit(dataset, epochs=3)
    checkpoint = tmp_path / "ckpt" / "train.pt"
    _fit(dataset, checkpoint=checkpoint, epochs=1)  # "killed" after epoch 1: its checkpoint is there
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    resumed, result = _fit(dataset, checkpoint=checkpoint, epochs=3)
    assert result.resumed_from_epoch == 2 and [r.epoch for r in result.history] == [1, 2, 3]
    assert _same_weights(resumed.state_dict(), uninterrupted.state_dict())
    assert _same_weights(result.best_state, full.best_state)


def test_a_checkpoint_for_other_settings_is_not_resumed(tmp_path: Path):
    dataset = _cache(tmp_path)
    checkpoint = tmp_path / "train.pt"
    _fit(dataset, checkpoint=checkpoint, epochs=1)
    training.seed_everything(7)
    options = training.TrainOptions(epochs=1, batch_size=8, seed=7)
    result = training.fit(
        CheXNet(), dataset, dataset, options, checkpoint=checkpoint, run_fingerprint="other"
    )
    assert result.resumed_from_epoch == 0


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("fault", ["truncated", "foreign-pickle", "not-a-dict"])
def test_a_broken_resume_checkpoint_is_skipped_never_fatal(tmp_path: Path, fault: str, monkeypatch, caplog):
    """What ``fit`` reads back to resume: a file it cannot read is skipped with a warning (training starts
    from epoch 1, as for another run's checkpoint above), and a foreign pickle's code never runs."""
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / "train_checkpoint.pt"
    if fault == "truncated":
        torch.save({"epoch": 1, "model": {"w": torch.zeros(50_000)}}, checkpoint)
        checkpoint.write_bytes(checkpoint.read_bytes()[:100_000])
    elif fault == "foreign-pickle":
        torch.save({"fingerprint": "x", "payload": _Evil()}, checkpoint)
    else:
        torch.save([1, 2, 3], checkpoint)
    assert resume.ResumeState.load(checkpoint, "f") is None
    assert "cannot be read" in caplog.text and "training starts from epoch 1" in caplog.text
    assert not (tmp_path / "pwned").exists()  # weights_only: the pickle's code never ran


def test_best_epoch_is_kept_and_early_stopping_and_plateau_work(tmp_path: Path, monkeypatch):
    dataset = _cache(tmp_path)
    scripted = iter([0.6, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5])  # validation AUROC per epoch: best at epoch 2
    monkeypatch.setattr(training, "mean_auroc", lambda per_class: next(scripted))
    model, result = _fit(dataset, epochs=7, lr=1e-4, early_stopping_patience=3, lr_plateau_patience=1)
    assert result.best_epoch == 2 and result.best_val_mean_auroc == 0.7 and result.stopped_early
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5]
    assert [r.lr for r in result.history] == pytest.approx([1e-4, 1e-4, 1e-4, 1e-4, 1e-5])
    assert not _same_weights(result.best_state, model.state_dict())  # epoch 2's weights, not the last


def test_non_finite_loss_stops_with_epoch_and_batch(tmp_path: Path):
    dataset = _cache(tmp_path, n=8)
    dataset.labels[:] = float("inf")  # NaN would mean "masked"; an infinite target is simply broken
    with pytest.raises(training.NonFiniteLossError, match="epoch 1, batch 1"):
        _fit(dataset)


def test_masked_loss_matches_a_hand_computation():
    """NaN targets (uncertain under U-Ignore) add nothing; the mean runs over the known entries only."""
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, 1.0]])
    loss = training_loss.MaskedBCEWithLogitsLoss()(logits, targets)

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + np.exp(-z))
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    by_hand = (bce(2.0, 1) + bce(0.5, 0) + bce(3.0, 1) + bce(-2.0, 1)) / 4
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0  # masked entries get no gradient
    full = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert training_loss.MaskedBCEWithLogitsLoss()(logits, full).item() == pytest.approx(
        torch.nn.BCEWithLogitsLoss()(logits, full).item()
    )  # nothing masked: exactly the seed's loss
    weights = training_loss.positive_weights(targets)
    assert weights.tolist() == pytest.approx([0.0, 0.0, 1.0])  # known negatives / known positives


def test_predict_returns_probabilities_in_dataset_order(tmp_path: Path):
    dataset = _cache(tmp_path, n=10)
    loader = inference.make_loader(dataset, batch_size=4, shuffle=False, seed=0, num_workers=0, device=CPU)
    scores, truth = inference.predict(CheXNet(), loader, CPU)
    assert scores.shape == (10, 14) and ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(truth, dataset.labels.numpy())


def test_flips_happen_on_the_device_batch(tmp_path: Path):
    torch.manual_seed(0)
    images = torch.arange(16, dtype=torch.uint8).repeat(64, 1, 4, 1)  # 64 × 1 × 4 × 16, asymmetric
    x = inference.prepare_batch(images, CPU, hflip=True, channels_last=False)
    flipped = [bool(torch.equal(x[i], x[0].flip(-1))) for i in range(64)]
    assert 10 < sum(flipped) < 54  # about half
    assert inference.prepare_batch(images, CPU, hflip=False, channels_last=True).is_contiguous(
        memory_format=torch.channels_last
    )


def test_amp_choice(monkeypatch):
    assert inference.amp_dtype("off", CPU) is None
    assert inference.amp_dtype("bf16", CPU) is torch.bfloat16
    # auto on a CPU: bf16 only where the CPU says it computes bf16 natively, fp32 elsewhere
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert inference.amp_dtype("auto", CPU) is torch.bfloat16
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert inference.amp_dtype("auto", CPU) is None
    assert inference.amp_dtype("auto", torch.device("mps")) is None
    with pytest.raises(training.ChexnetError, match="fp16 needs CUDA"):
        inference.amp_dtype("fp16", CPU)


def test_native_bf16_is_what_torch_reads_from_the_cpu():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert inference.cpu_has_native_bf16() is bool(expected)


def test_cpu_settings_are_on_for_cpu_and_off_for_cuda_when_auto():
    cuda = torch.device("cuda")
    assert inference.on_cpu_by_default("auto", CPU) and not inference.on_cpu_by_default("auto", cuda)
    assert inference.on_cpu_by_default(True, cuda) and not inference.on_cpu_by_default(False, CPU)


def test_memory_efficient_layers_give_the_same_gradients():
    torch.manual_seed(0)
    plain = CheXNet(3)
    saving = CheXNet(3)
    saving.load_state_dict(plain.state_dict())
    set_memory_efficient(saving, True)
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, saving):
        model.train()
        model.logits(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), saving.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    assert sum(m.memory_efficient for m in saving.modules() if hasattr(m, "memory_efficient")) == 58


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_defaults_are_the_gpu_path_as_before_the_cpu_defaults():
    """``auto`` on CUDA: mixed precision, NCHW, no recomputation (the CPU-only choices stay off)."""
    ctx = training.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    run = training.build_run(CheXNet(), torch.zeros(4, 14), training.TrainOptions(), ctx)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert run.dtype is expected and run.channels_last is False
    assert not any(getattr(m, "memory_efficient", False) for m in run.model.modules())
    assert next(run.model.parameters()).is_contiguous()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision_step(tmp_path: Path):
    dataset = _cache(tmp_path)
    ctx = training.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    options = training.TrainOptions(epochs=1, batch_size=8, amp="auto", channels_last=True)
    result = training.fit(CheXNet(), dataset, dataset, options, ctx)
    assert np.isfinite(result.history[0].train_loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_train_step_never_waits_for_the_gpu(amp: str):
    """A host sync per batch (e.g. copying constants from pageable memory) stalls the pipeline."""
    device = torch.device("cuda")
    dtype = inference.amp_dtype(amp, device)
    model = CheXNet().to(device, memory_format=torch.channels_last)
    net = training.LogitsView(model)
    optimizer = training.make_optimizer(model, 1e-4, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = torch.nn.BCEWithLogitsLoss()
    images = torch.randint(0, 256, (8, 1, 64, 64), dtype=torch.uint8).pin_memory()
    labels = (torch.rand(8, 14) < 0.3).float().pin_memory()

    def step() -> torch.Tensor:
        x = inference.prepare_batch(images, device, hflip=True, channels_last=True)
        y = labels.to(device, non_blocking=True)
        return training.train_step(net, x, y, criterion, optimizer, scaler, dtype)

    step()  # first step: cuDNN autotuning and allocations may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(loss).item() for loss in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_compiled_training_with_a_ragged_last_batch(tmp_path: Path):
    dataset = _cache(tmp_path)
    ctx = training.Context(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    batch = max(2, len(dataset) // 2 - 1)  # leaves a smaller last batch: one more static graph
    options = training.TrainOptions(epochs=2, batch_size=batch, compile=True, channels_last=True)
    result = training.fit(CheXNet(), dataset, dataset, options, ctx)
    assert len(result.history) == 2 and np.isfinite(result.history[-1].train_loss)


def test_evaluate_and_explain_run_the_model_as_trained(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert inference.Precision.of("auto", "auto", CPU) == inference.Precision(torch.bfloat16, True)
    assert inference.Precision.of("off", False, CPU) == inference.FP32
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert inference.Precision.of("auto", "auto", CPU) == inference.Precision(None, True)


def test_lr_auto_is_the_seeds_with_pretrained_weights_and_chexnets_from_scratch():
    assert state.learning_rate("auto", pretrained=True) == 1e-4  # the seed's Adam lr
    assert state.learning_rate("auto", pretrained=False) == 3e-4
    assert state.learning_rate(3e-4, pretrained=False) == 3e-4  # a number is used as it is


def test_one_run_resolves_its_precision_once_and_every_reader_says_the_same(tmp_path: Path, monkeypatch):
    """The log line, the loop, the model's record and reports/train.json read one :class:`Placement`:
    ``Precision.of`` runs once for a whole run (it ran four times, and ``memory_efficient`` was
    re-derived three times)."""
    from chexnet.config.stage import stage_params_from_dict
    from chexnet.config.train import TrainParams
    from chexnet.core.labels import NIH14, LabelList
    from chexnet.engine import records

    calls = []
    real = inference.Precision.of.__func__
    monkeypatch.setattr(
        inference.Precision, "of", classmethod(lambda cls, *a: calls.append(a) or real(cls, *a))
    )
    dataset, ctx = _cache(tmp_path), inference.SINGLE
    options = training.TrainOptions(epochs=1, batch_size=8, seed=7, amp="off", memory_efficient=True)
    placement = training.Placement.of(options, ctx.device)
    labels = LabelList(NIH14, "nih14")
    params = stage_params_from_dict({"weights": "inputs/none"}, (TrainParams,))  # amp: auto there
    line = training.describe(placement, ctx, False, labels)
    model = CheXNet()
    result = training.fit(model, dataset, dataset, options, ctx, placement=placement)
    info = records.model_record(params, labels, 32, False, ctx.device, model, precision=placement.precision)
    report = training.summary(result, False, options, placement, ctx)
    assert len(calls) == 1
    assert "fp32" in line and "memory_efficient True" in line
    assert report["precision"] == "float32" and report["memory_efficient"] is True
    assert info.run_as == placement.precision.run_as()


# --- training on what is left, and the end of a stage --------------------------------------------------
@pytest.mark.parametrize(
    ("images", "batch", "dropped"), [(17, 8, True), (16, 8, False), (18, 8, False), (1, 8, False)]
)
def test_a_last_training_batch_of_one_image_is_left_out(images: int, batch: int, dropped: bool):
    from torch.utils.data import TensorDataset

    from chexnet.engine.inference import make_loader

    data = TensorDataset(torch.arange(images))
    loader = make_loader(data, batch_size=batch, shuffle=True, seed=0, num_workers=0,
                         device=torch.device("cpu"), drop_single=True)  # fmt: skip
    sizes = [len(b[0]) for b in loader]
    assert (1 not in sizes or images == 1) and (sum(sizes) == images - 1) == dropped
    plain = make_loader(
        data, batch_size=batch, shuffle=False, seed=0, num_workers=0, device=torch.device("cpu")
    )
    assert sum(len(b[0]) for b in plain) == images  # evaluation loaders keep every image
