"""What every image reader shares: the per-file error, the pixel limit, and 8-bit scaling (below both
:mod:`chexnet.data.images` and :mod:`chexnet.data.dicom`)."""

from __future__ import annotations

import numpy as np


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the values' real range (min..max) onto 0..255; a flat image becomes black."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(np.shape(values), np.uint8)
    # one float64 copy worked in place: the same numbers as (values - low) * k rounded, a third of the
    # memory (a 60-Mpixel 16-bit film: 0.5 GB instead of 1.5 GB)
    scaled = np.array(values, dtype=np.float64)
    scaled -= low
    scaled *= 255.0 / (high - low)
    np.round(scaled, out=scaled)
    return scaled.astype(np.uint8)


class ImageReadError(ValueError):
    """One file that cannot be used, with a short reason code (``reason``) for the rejects table."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# Decoded pixels one image may have: a 7,000 × 8,000 film is 56 M. Checked on what the decoder will
# produce (a PNG/JPEG's frame header, which is what PIL allocates; a compressed DICOM's codestream, not
# only its Rows × Columns), before decoding.
MAX_PIXELS = 60_000_000


def refuse_over(pixels: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError("too_large", f"{what}: {pixels:,} pixels, more than {max_pixels:,} are read")
