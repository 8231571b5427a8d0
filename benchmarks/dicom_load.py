"""A load check of ``chexnet listen``: A associations at once, each sending I radiographs (pydicom's own
samples rewritten as DX, one JPEG 2000-compressed), to a node whose results go to a storage SCP on
loopback; prints what was lost (images refused, results missing), images per second end to end, and
the node's peak memory.

    python -m benchmarks.dicom_load [--model models/chexnet_model.pth] [--associations 4] [--images 10]
                                    [--engine auto] [--out benchmarks/results/NAME.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom

from benchmarks.common import peak_rss_of
from chexnet.pipeline import paths
from tests.helpers import SR_CLASS, Pacs, as_radiograph, c_echo, c_store, free_port, pydicom_sample


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--images", type=int, default=10, help="images per association")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chexnet-dicom-load-"))
    samples = [as_radiograph(pydicom_sample(name), folder / f"{i}.dcm")
               for i, name in enumerate(("CT_small.dcm", "JPEG2000.dcm"))]  # fmt: skip
    pacs, port = Pacs(), free_port()
    command = [sys.executable, "-m", "chexnet", "listen", "--model", str(args.model), "--port", str(port),
               "--send-to", f"PACS@127.0.0.1:{pacs.port}", "--engine", args.engine]  # fmt: skip
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while c_echo(port) != 0:
            if node.poll() is not None:
                raise SystemExit(f"chexnet listen ended with {node.returncode}")
            time.sleep(0.5)
        batches = [[pydicom.dcmread(samples[(a + i) % len(samples)]) for i in range(args.images)]
                   for a in range(args.associations)]  # fmt: skip
        expected = args.associations * args.images
        started = time.monotonic()
        with ThreadPoolExecutor(args.associations) as pool:
            statuses = [s for batch in pool.map(c_store, [port] * len(batches), batches) for s in batch]
        while len(pacs.of_class(SR_CLASS)) < expected and time.monotonic() - started < 1800:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        figures = {
            "associations": args.associations,
            "images": expected,
            "refused": sum(s != 0 for s in statuses),
            "reports_stored": len(pacs.of_class(SR_CLASS)),
            "objects_stored": len(pacs.received),
            "lost": expected - len(pacs.of_class(SR_CLASS)),
            "images_per_s": round(expected / elapsed, 2),
            "seconds": round(elapsed, 1),
            "node_peak_rss_mb": peak_rss_of(node.pid),
            "engine": args.engine,
            "model": str(args.model),
        }
    finally:
        node.terminate()
        node.wait(timeout=60)
        pacs.stop()
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
