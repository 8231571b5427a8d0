"""The service's limits (``chexnet serve``), apart from the service so that the CLI can show their
defaults without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 64 * 2**20  # a few full-size DICOM files
    max_files: int = 16
    max_pixels: int = 60_000_000  # decoded pixels of one image (a 7,000 × 8,000 film is 56 M)
    timeout_s: float = 120.0  # from the request's arrival to its answer
    max_batch: int = 8  # images the worker runs together
    batch_wait_ms: float = 5.0  # how long the worker waits for more images once it has one
