"""prepare + split at NIH scale: the real 112,120-row table, stub PNGs for every name.

The NIH metadata is real (../shared/data/nih); the images are small generated stubs (to spare disk)
laid out as NIH ships them, in images_001/ … images_012/. Prints wall time per step and peak
resident memory. Target: peak RSS ≤ 2 GB.

    python -m benchmarks.prepare_nih_scale [--work DIR] [--image-size 224] [--stub-size 64]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.common import peak_rss_mb, timed
from chexnet.data import cache, prepare, splits, tables
from chexnet.data.presets import registry

NIH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nih"


def write_stubs(names: list[str], root: Path, size: int) -> None:
    """One small grayscale PNG per name, 12 sub-folders as in NIH's release."""
    rng = np.random.default_rng(0)
    per_folder = -(-len(names) // 12)
    base = rng.integers(0, 256, (size, size), dtype=np.uint8)
    for i, name in enumerate(tqdm(names, desc="stub PNGs", unit="img", mininterval=2)):
        folder = root / f"images_{i // per_folder + 1:03d}" / "images"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i % size, axis=1)).save(folder / name, compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, help="folder for stubs and cache (default: a temporary one)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--stub-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="decoder threads (0: every core)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if not (NIH / "Data_Entry_2017_v2020.csv.gz").exists():
        sys.exit(f"needs the NIH metadata at {NIH}")
    work = args.work or Path(tempfile.mkdtemp(prefix="chexnet-nih-"))
    results: dict[str, float] = {}
    try:
        table = tables.read_table(NIH / "Data_Entry_2017_v2020.csv.gz")
        if not (work / "images").exists():
            with timed(results, "write_stub_pngs_s"):
                write_stubs(list(table["Image Index"]), work / "images", args.stub_size)
        with timed(results, "prepare_s"):
            report = prepare.prepare_cache(
                table,
                table_path="Data_Entry_2017_v2020.csv.gz",
                image_root=work / "images",
                out_dir=work / "prepared",
                columns=registry.resolve_columns("nih", "", "", ""),
                image_size=args.image_size,
                subset=len(table),
                seed=42,
                workers=args.workers,
                max_rejected_fraction=0.01,
                preset="nih",
            )
        with timed(results, "split_s"):
            index = cache.load_index(work / "prepared")
            index["split"] = splits.patient_split(
                index, cache.load_labels(work / "prepared"), val_fraction=0.1, test_fraction=0.2, seed=42
            )
            splits.check_no_patient_overlap(index)
        cache_gb = (work / "prepared" / cache.IMAGES_FILE).stat().st_size / 1e9
        print(
            json.dumps(
                {
                    "images": report.images_written,
                    "patients": int(index["patient"].nunique()),
                    "image_size": args.image_size,
                    "cache_gb": round(cache_gb, 2),
                    **results,
                    "prepare_images_per_s": round(report.images_written / results["prepare_s"], 1),
                    **peak_rss_mb(),
                },
                indent=2,
            )
        )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
