"""DICOM files for tests, written with pydicom: a plain DX radiograph, and a JPEG-compressed one whose
header and codestream can be made to disagree (the hostile cases of round three)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _dx_dataset(transfer_syntax: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    return dataset


def dx_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Path:
    """A minimal 12-bit DX DICOM, uncompressed."""
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = _dx_dataset(ExplicitVRLittleEndian)
    dataset.set_pixel_data(pixels.astype(np.uint16), photometric_interpretation=photometric, bits_stored=12)
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(path, enforce_file_format=True)
    return path


def gray_jpeg(side: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side)).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def claim_size(jpeg: bytes, rows: int, columns: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) saying ``rows × columns``: what a decoder would allocate."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + jpeg[at + 9 :]


def jpeg_dx_dicom(path: Path, jpeg: bytes, rows: int, columns: int) -> Path:
    """A DX DICOM (JPEG Baseline) holding ``jpeg`` as its one frame, its header saying ``rows × columns``."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    dataset = _dx_dataset(JPEGBaseline8Bit)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    dataset.PixelData = encapsulate([jpeg])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    return path
