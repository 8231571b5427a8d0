"""Training speed: our cache loader and train loop against the seed's way, side by side in one run.

1. Loader: images/s of the prepared-cache loader (uint8 memory map, DataLoader workers, pinned memory,
   normalisation on the device) against a seed-style loader (PIL open, convert RGB, Resize, ToTensor,
   Normalize per sample) on the same 1024×1024 PNGs, same batch size, same workers. Target ≥ 30×.
2. Training: images/s of our loop (``training.fit``: cache loader, AMP and channels_last on CUDA) against
   a seed-style loop (fp32, NCHW, per-sample decode, Sigmoid + BCELoss) on the same data; on CUDA also
   the model alone on synthetic tensors already on the GPU (the ceiling for our loop with data).
   Targets on one H100 at 224 px: ≥ 2,500 img/s with data and ≥ 0.9 of the model-alone figure.

Each ``--configs`` entry is ``BATCH[:cl][:compile[=MODE]]`` (cl = channels_last; MODE a
``train.compile_mode``); each is timed as our loop with data and, on CUDA, the model alone. Figures are
written to ``--json`` after every measurement, so a run cut short still leaves what it measured; a
configuration that fails is recorded with its error and the next one runs.

    python -m benchmarks.train_speed                                        # CPU: 64 px, batch 32
    python -m benchmarks.train_speed --size 224 --configs 32 256:cl 256:cl:compile   # a GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.models import densenet121

from benchmarks.prepare_throughput import write_images
from chexnet.core.labels import NIH14, LabelOptions
from chexnet.data import cache, decode, prepare
from chexnet.data.dataset import IMAGENET_MEAN, IMAGENET_STD, CachedImages, normalize_batch
from chexnet.data.presets import registry
from chexnet.engine import training
from chexnet.engine.distributed import Context
from chexnet.model.network import CheXNet


class SeedStyleImages(Dataset):
    """The seed's data path: decode the PNG, convert to RGB, resize, to tensor, normalise, per sample."""

    def __init__(self, paths: list[Path], size: int):
        self.paths = paths
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = Image.open(self.paths[i]).convert("RGB")
        return self.transform(image), torch.zeros(14)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(loader: DataLoader, device: torch.device, normalise: bool, passes: int = 2) -> float:
    """Images/s delivered to the device, best of ``passes`` full passes (the first warms workers)."""
    rates = []
    for _ in range(passes):
        started, count = time.perf_counter(), 0
        for images, _labels in loader:
            batch = normalize_batch(images, device) if normalise else images.to(device, non_blocking=True)
            count += len(batch)
        sync(device)
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def seed_style_train_rate(loader: DataLoader, device: torch.device, batches: int) -> float:
    """The seed's loop: fp32, NCHW, Linear → Sigmoid head, BCELoss, Adam; per-sample decode loader."""
    torch.manual_seed(0)
    model = densenet121(weights=None)
    model.classifier = nn.Sequential(nn.Linear(model.classifier.in_features, 14), nn.Sigmoid())
    model.to(device).train()
    optimizer, criterion = torch.optim.Adam(model.parameters(), lr=1e-4), nn.BCELoss()
    count, started = 0, None
    for step, (images, labels) in enumerate(loader):
        if step == 1:  # the first batch (worker start, cuDNN set-up) is not timed
            sync(device)
            started, count = time.perf_counter(), 0
        loss = criterion(model(images.to(device)), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        count += len(images)
        if step == batches:
            break
    sync(device)
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class Config:
    """One timed set-up: batch size, memory format and compilation."""

    batch: int
    channels_last: bool = False
    compile_mode: str | None = None  # None: eager

    @staticmethod
    def parse(text: str) -> Config:
        batch, *flags = text.split(":")
        channels_last, mode = False, None
        for flag in flags:
            if flag == "cl":
                channels_last = True
            elif flag.startswith("compile"):
                mode = flag.partition("=")[2] or "default"
            else:
                raise argparse.ArgumentTypeError(f"unknown flag {flag!r} in {text!r}")
        return Config(int(batch), channels_last, mode)

    @property
    def tag(self) -> str:
        compiled = "" if self.compile_mode is None else f"_compiled_{self.compile_mode}"
        return f"b{self.batch}{'_channels_last' if self.channels_last else ''}{compiled}"


def model_alone_rate(device: torch.device, size: int, config: Config, steps: int) -> float:
    """The training loop's own step (``training.build_run`` and ``training.train_step``: the same
    optimiser, loss, AMP, memory format and compilation) on synthetic tensors already on the device: no
    data path at all."""
    torch.manual_seed(0)
    options = training.TrainOptions(
        channels_last=config.channels_last,
        compile=config.compile_mode is not None,
        compile_mode=config.compile_mode or "default",
    )
    ctx = Context(rank=0, world_size=1, local_rank=0, device=device)
    y = (torch.rand(config.batch, 14) < 0.2).float()
    run = training.build_run(CheXNet(), y, options, ctx)
    memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
    x = torch.randn(config.batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = y.to(device)

    def step() -> None:
        training.train_step(run.net, x, y, run.criterion, run.optimizer, run.scaler, run.dtype)

    for _ in range(5 if config.compile_mode is None else 10):  # cuDNN autotuning, compilation, graphs
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):  # one sync at the end, as in the training loop: the GPU runs ahead
        step()
    sync(device)
    return steps * config.batch / (time.perf_counter() - started)


def our_train_rate(prepared: Path, steps: int, device: torch.device, config: Config, workers: int) -> float:
    """``training.fit`` as the train stage runs it, ``steps`` full batches per epoch; epoch 2's images/s
    (epoch 1 pays for worker start-up, cuDNN autotuning and compilation)."""
    stack = cache.load_images(prepared)
    rows = steps * config.batch
    tiled = np.resize(np.arange(len(stack)), rows)  # repeat the prepared images up to `rows`
    labels = (np.random.default_rng(0).random((rows, 14)) < 0.2).astype(np.float32)
    train_set = CachedImages(prepared, tiled, labels)
    val_set = CachedImages(prepared, tiled[: config.batch], labels[: config.batch])
    options = training.TrainOptions(
        epochs=2,
        batch_size=config.batch,
        num_workers=workers,
        compile=config.compile_mode is not None,
        compile_mode=config.compile_mode or "default",
        channels_last=config.channels_last,
    )
    ctx = Context(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    result = training.fit(CheXNet(), train_set, val_set, options, ctx)
    return result.history[-1].images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--size", type=int, default=None, help="training image size (default: 224 on CUDA, 64 on CPU)"
    )
    parser.add_argument(
        "--pngs", type=int, default=None, help="1024×1024 PNGs to generate (default 256 / 96)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="batches per epoch of our loop (default 64 / 8)"
    )
    parser.add_argument(
        "--configs",
        type=Config.parse,
        nargs="+",
        default=None,
        help="BATCH[:cl][:compile[=MODE]] ... (default: 32); the first one's batch times the loaders",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: min(8, cores))"
    )
    parser.add_argument("--seed-batches", type=int, default=None, help="timed batches of the seed-style loop")
    parser.add_argument(
        "--skip-seed-style", action="store_true", help="time only our loop and the model alone"
    )
    parser.add_argument("--alone-steps", type=int, default=30, help="timed steps of the model alone")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    size = args.size or (224 if gpu else 64)
    pngs, steps = args.pngs or (256 if gpu else 96), args.steps or (64 if gpu else 8)
    workers = args.workers if args.workers is not None else min(8, decode.default_workers(0))
    seed_batches = args.seed_batches or (20 if gpu else 3)
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if gpu else "cpu",
        "torch": torch.__version__,
        "size": size,
        "workers": workers,
        "date": time.strftime("%Y-%m-%d"),
    }

    def record(key: str, value: float) -> None:
        figures[key] = round(value, 3 if value < 10 else 1)
        print(f"{key:>44}: {value:10.1f}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))

    work = Path(tempfile.mkdtemp(prefix="chexnet-train-speed-"))
    try:
        names = write_images(work / "images", pngs)
        paths = [work / "images" / name for name in names]
        # one finding per image, cycling through NIH's 14, so every finding has positives
        findings = [NIH14[i % len(NIH14)] for i in range(len(names))]
        table = pd.DataFrame({"imagem": names, "patologia": findings, "paciente_id": range(len(names))})
        prepared = work / "prepared"
        prepare.prepare_cache(
            table,
            table_path="bench",
            image_root=work / "images",
            out_dir=prepared,
            columns=registry.resolve_columns("seed", "", "", ""),
            label_options=LabelOptions(min_positives=1),
            image_size=size,
            subset=len(names),
            seed=0,
            workers=0,
        )

        configs = args.configs or [Config(32)]
        batch = configs[0].batch
        if not args.skip_seed_style:
            common = dict(
                batch_size=batch, num_workers=workers, pin_memory=gpu, persistent_workers=workers > 0
            )
            seed_loader = DataLoader(SeedStyleImages(paths, size), shuffle=True, **common)
            # The seed-style training loop must outrun its workers' prefetch, or it would time the model.
            needed = (seed_batches + 2 + 2 * max(workers, 1)) * batch
            seed_train_loader = DataLoader(
                SeedStyleImages(paths * -(-needed // len(paths)), size), shuffle=True, **common
            )
            labels = np.zeros((len(names), 14), np.float32)
            cache_loader = DataLoader(
                CachedImages(prepared, np.arange(len(names)), labels), shuffle=True, **common
            )
            seed_rate = loader_rate(seed_loader, device, normalise=False)
            cache_rate = loader_rate(cache_loader, device, normalise=True)
            record(f"loader_seed_style_img_s_b{batch}", seed_rate)
            record(f"loader_cache_img_s_b{batch}", cache_rate)
            record("loader_speedup", cache_rate / seed_rate)
            train_rate = seed_style_train_rate(seed_train_loader, device, seed_batches)
            record(f"train_seed_style_img_s_b{batch}", train_rate)
        for config in configs:
            try:
                ours = our_train_rate(prepared, steps, device, config, workers)
                record(f"train_ours_with_data_img_s_{config.tag}", ours)
                if gpu:
                    alone = model_alone_rate(device, size, config, args.alone_steps)
                    record(f"train_model_alone_img_s_{config.tag}", alone)
                    record(f"with_data_over_model_alone_{config.tag}", ours / alone)
            except Exception as error:  # record it and time the next set-up
                figures[f"error_{config.tag}"] = f"{type(error).__name__}: {error}"[:500]
                print(f"{config.tag}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(figures, indent=2))
            finally:
                if gpu:
                    torch.cuda.empty_cache()
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
