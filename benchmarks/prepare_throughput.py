"""prepare's decode throughput against the ideal: single-core decode rate × cores, on the same files.

Writes a few hundred 1024×1024 chest-like PNGs (the demo's drawing at NIH's size), measures the
single-process decode + resize rate on them, then runs prepare with every core and prints both side by
side. Target: parallel rate ≥ 0.8 × (single-core rate × cores).

    python -m benchmarks.prepare_throughput [--images 300] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from benchmarks.common import peak_rss_mb
from chexnet.core.labels import NIH14, LabelOptions
from chexnet.data import decode, prepare
from chexnet.data.images import decode_one
from chexnet.data.presets import registry
from chexnet.synthetic.painter import Anatomy, draw_radiograph


def write_images(root: Path, count: int, size: int = 1024) -> list[str]:
    """``count`` PNGs of NIH's size: 20 drawn radiographs, each saved many times with fresh noise."""
    rng = np.random.default_rng(0)
    bases = [draw_radiograph(size, Anatomy.sample(rng), {NIH14[i % 14]}, rng)[0] for i in range(20)]
    root.mkdir(parents=True)
    names = []
    for i in tqdm(range(count), desc="1024 px PNGs", unit="img"):
        noisy = bases[i % len(bases)] + rng.normal(0, 0.01, (size, size))
        name = f"{i:08d}_000.png"
        Image.fromarray(np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)).save(root / name)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cores = decode.default_workers(0)
    work = Path(tempfile.mkdtemp(prefix="chexnet-throughput-"))
    try:
        names = write_images(work / "images", args.images)
        paths = [str(work / "images" / name) for name in names]
        for path in paths:  # read once, so both runs find the files in the page cache
            Path(path).read_bytes()

        started = time.perf_counter()
        for position, path in enumerate(paths):
            decode_one((position, path, args.image_size))
        single_rate = len(paths) / (time.perf_counter() - started)

        # one finding per image, cycling through NIH's 14, so every finding has positives
        findings = [NIH14[i % len(NIH14)] for i in range(len(names))]
        table = pd.DataFrame({"imagem": names, "patologia": findings, "paciente_id": range(len(names))})
        started = time.perf_counter()
        prepare.prepare_cache(
            table,
            table_path="bench",
            image_root=work / "images",
            out_dir=work / "prepared",
            columns=registry.resolve_columns("seed", "", "", ""),
            label_options=LabelOptions(min_positives=1),
            image_size=args.image_size,
            subset=len(names),
            seed=0,
            workers=cores,
        )
        parallel_rate = len(paths) / (time.perf_counter() - started)
        bound = single_rate * cores
        figures = {
            "images": len(paths),
            "source_size": 1024,
            "image_size": args.image_size,
            "cores": cores,
            "single_core_images_per_s": round(single_rate, 1),
            "bound_images_per_s": round(bound, 1),
            "prepare_images_per_s": round(parallel_rate, 1),
            "ratio_to_bound": round(parallel_rate / bound, 3),
        }
        print(json.dumps(figures | peak_rss_mb(), indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
