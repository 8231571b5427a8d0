"""Reading DICOM radiographs: only projection radiographs, one frame, and pixel data checked against its
header before it is decoded (:func:`check_dicom_pixels`, :func:`codestream_size`)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from chexnet.data.pixels import MAX_PIXELS, ImageReadError, refuse_over, scale_to_uint8

DICOM_SUFFIXES = (".dcm", ".dicom")
# Projection radiography (DICOM PS3.3 C.7.3.1.1.1): computed, digital and plain X-ray. Anything else (CT,
# MR, ultrasound, RT dose, secondary captures, ...) would get chest findings it was never meant for.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")

# start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (ITU T.81 Table B.1; C4, C8, CC are not frames) and
# JPEG-LS's SOF55 (ITU T.87)
FRAME_HEADERS = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7}


def codestream_size(fragment: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` a compressed frame will decode to, from its own codestream header: JPEG and
    JPEG-LS (the SOF marker's height and width, ITU T.81 B.2.2 and T.87), JPEG 2000 (the SIZ marker's
    Ysiz − YOsiz and Xsiz − XOsiz, ITU T.800 A.5.1). ``None``: a codestream this does not parse (RLE
    has none: its decoder writes into Rows × Columns)."""
    if fragment[:2] == b"\xff\xd8":  # JPEG / JPEG-LS: walk the markers up to the frame header
        at = 2
        while at + 4 <= len(fragment):
            if fragment[at] != 0xFF:
                return None
            marker = fragment[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            length = int.from_bytes(fragment[at + 2 : at + 4], "big")
            if marker in (
                *range(0xC0, 0xC4),
                *range(0xC5, 0xC8),
                *range(0xC9, 0xCC),
                *range(0xCD, 0xD0),
                0xF7,
            ):
                if at + 9 > len(fragment):
                    return None
                rows = int.from_bytes(fragment[at + 5 : at + 7], "big")
                columns = int.from_bytes(fragment[at + 7 : at + 9], "big")
                return rows, columns
            at += 2 + length
        return None
    start = fragment.find(b"\xff\x4f\xff\x51")  # JPEG 2000: SOC then SIZ (a JP2 box wrapper allowed)
    if start >= 0 and start + 24 <= len(fragment):
        siz = fragment[start + 4 :]
        xsiz, ysiz, xo, yo = (int.from_bytes(siz[i : i + 4], "big") for i in (4, 8, 12, 16))
        return ysiz - yo, xsiz - xo
    return None


def check_dicom_pixels(dataset, max_pixels: int | None) -> None:
    """What the pixel data will decode to, checked before decoding: one frame's worth of native data
    (not two frames under a header that names none), a compressed frame whose codestream is the size the
    header says, and no more than ``max_pixels``."""
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise ImageReadError("unreadable", f"DICOM Rows × Columns is {rows} × {columns}: no image to read")
    refuse_over(rows * columns, max_pixels, "DICOM Rows × Columns")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    data = dataset.PixelData
    if syntax is not None and syntax.is_encapsulated:
        from pydicom.encaps import generate_frames

        try:
            fragment = next(generate_frames(data, number_of_frames=1))
        except (StopIteration, ValueError, KeyError) as error:
            raise ImageReadError(
                "unreadable", f"DICOM encapsulated pixel data is malformed: {error}"
            ) from error
        size = codestream_size(bytes(fragment[:65536]))
        if size is not None and size != (rows, columns):
            refuse_over(size[0] * size[1], max_pixels, "DICOM codestream")
            raise ImageReadError(
                "unreadable",
                f"DICOM pixel data's codestream is {size[1]} × {size[0]} pixels but its header says "
                f"{columns} × {rows}: the file is inconsistent, export it again",
            )
        return
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    bits = int(dataset.get("BitsAllocated", 8) or 8)
    frame_bytes = rows * columns * samples * bits // 8
    if len(data) < frame_bytes:
        raise ImageReadError(
            "truncated",
            f"DICOM pixel data is {len(data):,} bytes where {columns} × {rows} pixels need {frame_bytes:,}: "
            "the file is truncated (or its header wrong): send it again",
        )
    if frame_bytes and len(data) >= 2 * frame_bytes:
        raise ImageReadError(
            "multi_frame",
            f"DICOM pixel data holds {len(data) // frame_bytes} frames' worth of {columns} × {rows} pixels "
            "but no NumberOfFrames; a radiograph has one frame: export each frame on its own",
        )


def is_dicom(path: str | Path) -> bool:
    """By suffix, or by the ``DICM`` magic at byte 128 (PACS exports often have no suffix: SE0001/IM0001)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def decoder_hint(error: Exception) -> str:
    """pydicom's "no plugin" message lists every plugin on several lines: one line instead."""
    first = " ".join(str(error).split())
    return first[:300] + ("…" if len(first) > 300 else "")


def _check_radiograph(dataset) -> None:
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise ImageReadError(
            "not_radiograph",
            f"DICOM Modality {modality or '(none)'} is not a projection radiograph "
            f"({', '.join(RADIOGRAPH_MODALITIES)}); the model reads chest X-rays only",
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        raise ImageReadError(
            "not_grayscale", "DICOM PhotometricInterpretation PALETTE COLOR: a radiograph is grayscale"
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            "multi_frame", f"DICOM holds {frames} frames; a radiograph has one: export each frame on its own"
        )


def open_dicom(source: str | Path | BinaryIO, max_pixels: int | None = MAX_PIXELS):
    """A DICOM radiograph's dataset, read and checked before any pixel is decoded: readable, with pixel
    data that is not cut short, a projection radiograph (Modality CR, DX, RG) of one frame, not palette
    colour, and pixel data that decodes to what its header says, within ``max_pixels``. ``source``: a
    path, or a file object (an upload held in memory). Anything else raises :class:`ImageReadError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(source)
        has_pixels = "PixelData" in dataset
    except (InvalidDicomError, AttributeError, KeyError, EOFError, ValueError, TypeError) as error:
        raise ImageReadError("unreadable", f"not a readable DICOM file: {decoder_hint(error)}") from error
    if not has_pixels:
        if b"\xe0\x7f\x10\x00" in _all_bytes(source):  # the tag (7FE0,0010) is there: its value was cut
            raise ImageReadError("truncated", "DICOM file is truncated: its pixel data is cut short")
        raise ImageReadError("unreadable", "DICOM file has no pixel data")
    _check_radiograph(dataset)
    check_dicom_pixels(dataset, max_pixels)
    return dataset


def _all_bytes(source: str | Path | BinaryIO) -> bytes:
    if isinstance(source, str | Path):
        return Path(source).read_bytes()
    source.seek(0)
    return source.read()


def dicom_gray(dataset) -> np.ndarray:
    """An opened radiograph's pixels (:func:`open_dicom`) as 8-bit grayscale, as a radiologist would see
    them: rescale slope/intercept (modality LUT), then the VOI LUT or window centre/width when the file
    has one, then MONOCHROME1 (white = low values) inverted, then the real range scaled to 0..255."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        pixels = dataset.pixel_array
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError, KeyError) as error:
        # compressed pixel data without a decoder plugin (JPEG-LS, JPEG 2000, 12-bit JPEG), or a
        # malformed one: a per-file reason, never a stop
        transfer = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(transfer, "name", transfer) or "unknown transfer syntax"
        raise ImageReadError(
            "undecodable", f"DICOM pixel data ({name}) cannot be decoded: {decoder_hint(error)}"
        ) from error
    if dataset.get("SamplesPerPixel", 1) != 1:  # a colour capture of a radiograph: its luminance
        return np.asarray(Image.fromarray(scale_to_uint8(pixels)).convert("L"))
    values = apply_modality_lut(pixels, dataset)
    if "VOILUTSequence" in dataset or "WindowCenter" in dataset:
        values = apply_voi_lut(values, dataset)
    gray = scale_to_uint8(values)
    if dataset.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        gray = 255 - gray
    return gray


def read_dicom(source: str | Path | BinaryIO, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A DICOM radiograph as 8-bit grayscale (:func:`open_dicom`, then :func:`dicom_gray`)."""
    return dicom_gray(open_dicom(source, max_pixels))
