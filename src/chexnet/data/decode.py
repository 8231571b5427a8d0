"""Decoding every selected image once, on threads, into the cache's uint8 stack (bounded memory)."""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from chexnet.data.images import Decoded, decode_one, index_images, resolve
from chexnet.data.tables import DataError

log = logging.getLogger(__name__)


class _Uint8StackWriter:
    """Writes an ``N × S × S`` uint8 ``.npy`` file row by row, with plain sequential writes.

    Plain writes (not a memory map) keep the process's resident memory flat however large N is. The
    header is written for the most rows there can be and rewritten, same length, for the rows kept.
    """

    def __init__(self, path: Path, max_rows: int, size: int):
        self.path, self.size, self.rows = path, size, 0
        self.header_length = len(self._header(max_rows))
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(self._header(max_rows))

    def _header(self, rows: int, length: int | None = None) -> bytes:
        text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, {self.size}, {self.size}), }}"
        if length is None:  # pad so that the data starts 64-byte aligned, as numpy writes it
            length = -(-(10 + len(text) + 1) // 64) * 64
        text = text.ljust(length - 10 - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

    def append(self, image: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self.rows += 1

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(self._header(self.rows, self.header_length))
        self.file.close()


def decode_all(tasks: list[tuple[int, str, int]], workers: int) -> Iterator[Decoded]:
    """Decode with ``workers`` threads (1: in this one), yielding results in task order.

    Threads, not processes: Pillow releases the GIL while it inflates PNG data and resizes, so threads
    scale with cores (measured: 0.94 of the ideal on 2 cores, benchmarks/prepare_throughput.py)
    without process start-up, pickling or a second copy of the interpreter. A window of at most a few
    hundred tasks is submitted ahead of the one being taken, so memory stays bounded whatever N is.
    On Ctrl-C or SIGTERM (or any error) the queued tasks are cancelled and only the images being decoded
    finish: no worker waits on a consumer that has gone (a ``multiprocessing.pool`` fed through a
    semaphore deadlocked there).
    """
    if workers <= 1 or len(tasks) < 2:
        yield from map(decode_one, tasks)
        return
    window = workers * 32
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        remaining = iter(tasks)
        pending = deque(pool.submit(decode_one, task) for task in islice(remaining, window))
        while pending:
            result = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(decode_one, following))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def check_cache_fits(out_dir: Path, images: int, image_size: int) -> None:
    """Refuse, before decoding, a cache that cannot fit on the disk (``image_size: 4096`` makes 16 MB an
    image: 335 GB at the default subset), and say the size of a large one."""
    import shutil

    need = images * image_size * image_size
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise DataError(
            f"the image cache for {images:,} images at image_size {image_size} needs {need / 1e9:,.1f} GB in "
            f"{out_dir}, which has {free / 1e9:,.1f} GB free; lower image_size or subset, or free space"
        )
    if need > 20e9:
        log.warning("the image cache will take %.1f GB (%d images at %d px)", need / 1e9, images, image_size)


def default_workers(requested: int) -> int:
    """0 means every core this process may use."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_tasks(
    names: list[str], table_rows: list[int], image_root: str | Path, image_size: int, resize: str = "square"
) -> tuple[list[tuple[int, str, int, str]], list[dict[str, object]]]:
    """Where each image file is (``(position, path, size, resize rule)`` tasks), and the rows whose file
    is not found or would leave the image folder."""
    root = Path(image_root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: set data.images in params.yaml")
    # Bare file names are looked up in a recursive index (NIH's images_001/ ... folders); entries with
    # folders (CheXpert, MIMIC) are joined to the root, so equal file names in other folders are no bother.
    by_name = index_images(root) if any(len(Path(n).parts) == 1 for n in names) else {}
    tasks, rejects = [], []
    for position, name in enumerate(names):
        path, reason = resolve(root, name, by_name)
        if path is None:
            where = (
                "absolute or outside the image folder"
                if reason == "unsafe_path"
                else f"not found under {root}"
            )
            rejects.append(
                {"image": name, "table_row": int(table_rows[position]), "reason": reason, "detail": where}
            )
        else:
            tasks.append((position, str(path), image_size, resize))
    return tasks, rejects


def decode_into(
    images_file: Path, tasks: list[tuple[int, str, int, str]], image_size: int, workers: int
) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, str, str]]]:
    """Decode every task once into the uint8 stack at ``images_file`` (already a temporary path);
    returns the positions written, their original sizes, and ``(position, reason, detail)`` failures."""
    kept: list[int] = []
    sizes: list[tuple[int, int]] = []
    failed: list[tuple[int, str, str]] = []
    n_workers = default_workers(workers)
    log.info("decoding %d images with %d thread(s) into %s", len(tasks), n_workers, images_file)
    writer = _Uint8StackWriter(images_file, len(tasks), image_size)
    try:
        for result in tqdm(decode_all(tasks, n_workers), total=len(tasks), desc="prepare", unit="img",
                           smoothing=0.05):  # fmt: skip
            if result.pixels is None:
                failed.append((result.position, result.reason, result.detail))
                continue
            writer.append(result.pixels)
            kept.append(result.position)
            sizes.append(result.original_size)
    finally:
        writer.close()
    return kept, sizes, failed
