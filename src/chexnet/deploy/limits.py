"""The service's limits (``chexnet serve``), apart from the service so that the CLI can show their
defaults without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass

from chexnet.data.images import MAX_PIXELS

# Peak memory of decoding one image, per decoded pixel: a 16-bit PNG measured at 13 bytes a pixel
# (PIL's buffer, its NumPy copy, one float64 working copy, the 8-bit result; benchmarks/README.md,
# "The service's memory"); 16 leaves room. 8-bit images cost less: the budget is an upper bound.
DECODE_BYTES_PER_PIXEL = 16


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 * 2**20  # a few full-size DICOM files
    max_files: int = 16
    max_pixels: int = MAX_PIXELS  # decoded pixels of one image (a 7,000 × 8,000 film is 56 M)
    # memory all decodes in flight may hold together (every request's): a decode waits for its share,
    # so N large files in M requests never cost more than this at once (60 M pixels: 0.96 GB each)
    max_decode_bytes: int = 2 * 2**30
    timeout_s: float = 120.0  # from the request's arrival to its answer
    max_batch: int = 8  # images the worker runs together
    batch_wait_ms: float = 5.0  # how long the worker waits for more images once it has one
    max_heatmaps_waiting: int = 8  # images queued for heat maps; past it a file is answered without them

    def decode_cost(self, pixels: int) -> int:
        """The memory one decode of ``pixels`` pixels is budgeted at."""
        return pixels * DECODE_BYTES_PER_PIXEL
