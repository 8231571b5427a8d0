"""What DVC itself costs when a 112,120-file image folder is a stage dependency.

Builds a throw-away git + DVC repo whose one stage depends on the image folder (as prepare depends on
``data.images``) and times: the first ``dvc repro`` (DVC hashes every file), a no-op ``dvc status``,
a no-op ``dvc repro``, and ``dvc status`` after one image changed. Also prints this machine's MD5 rate,
since on real 1024×1024 PNGs (about 42 GB for NIH) the first hash is bound by reading and hashing
bytes, not by the file count.

    python -m benchmarks.dvc_folder_cost [--images DIR]   (default: 112,120 generated stub PNGs)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.prepare_nih_scale import NIH, write_stubs
from chexnet.data.tables import read_table


def timed_run(cwd: Path, *command: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, cwd=cwd, check=True, capture_output=True, env=os.environ | {"DVC_NO_ANALYTICS": "1"}
    )
    return round(time.perf_counter() - started, 2)


def md5_mb_per_s() -> float:
    block = os.urandom(64 * 2**20)
    started = time.perf_counter()
    hashlib.md5(block).hexdigest()
    return round(64 / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, help="an existing image folder (default: generate stubs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chexnet-dvc-cost-"))
    try:
        images = args.images
        if images is None:
            images = work / "images"
            write_stubs(list(read_table(NIH / "Data_Entry_2017_v2020.csv.gz")["Image Index"]), images, 64)
        files = [p for p in images.rglob("*") if p.is_file()]
        repo = work / "repo"
        repo.mkdir()
        (repo / "dvc.yaml").write_text(
            "stages:\n  prepare:\n    cmd: python -c \"open('out.txt', 'w').write('ok')\"\n"
            f"    deps:\n      - {images.resolve()}\n    outs:\n      - out.txt\n"
        )
        for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            subprocess.run(command, cwd=repo, check=True)
        figures = {
            "files": len(files),
            "megabytes": round(sum(p.stat().st_size for p in files) / 2**20, 1),
            "first_dvc_repro_s": timed_run(repo, "dvc", "repro"),
            "noop_dvc_status_s": timed_run(repo, "dvc", "status"),
            "noop_dvc_repro_s": timed_run(repo, "dvc", "repro"),
        }
        files[len(files) // 2].write_bytes(files[len(files) // 2].read_bytes() + b"\0")
        figures["dvc_status_after_one_change_s"] = timed_run(repo, "dvc", "status")
        figures["md5_mb_per_s"] = md5_mb_per_s()
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
