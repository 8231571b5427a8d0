"""predict's CPU latency per image and throughput on a folder of 100 images (1024×1024 PNGs).

python -m benchmarks.predict_speed [--images 100] [--model models/chexnet_model.pth]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.prepare_throughput import write_images
from chexnet.core.labels import NIH14
from chexnet.deploy.predict import predict_files
from chexnet.engine.inference import resolve_device
from chexnet.model.file import load_model
from chexnet.model.network import CheXNet
from chexnet.pipeline import paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    device = resolve_device(args.device)
    model, labels = CheXNet(), list(NIH14)
    if args.model.is_file():
        model, info = load_model(args.model)
        labels = list(info.labels.names)
    model = model.to(device).eval()
    thresholds = dict.fromkeys(labels, 0.5)
    work = Path(tempfile.mkdtemp(prefix="chexnet-predict-"))
    try:
        files = [work / "images" / name for name in write_images(work / "images", args.images)]
        predict_files(model, files[:2], labels=labels, thresholds=thresholds, device=device)  # warm-up
        latencies = []
        for path in files[:10]:
            started = time.perf_counter()
            predict_files(model, [path], labels=labels, thresholds=thresholds, device=device)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        predict_files(
            model, files, labels=labels, thresholds=thresholds, device=device, batch_size=args.batch_size
        )
        folder_seconds = time.perf_counter() - started
        figures = {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "images": len(files),
            "latency_per_image_s": round(statistics.median(latencies), 3),
            "folder_seconds": round(folder_seconds, 2),
            "folder_images_per_s": round(len(files) / folder_seconds, 2),
            "batch_size": args.batch_size,
        }
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
