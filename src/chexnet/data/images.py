"""Finding and decoding image files: path safety, the recursive file-name index, any pixel format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from chexnet.core.errors import ChexnetError
from chexnet.data.input_spec import RESIZE_RULES, InputSpecError


class ImageIndexError(ChexnetError, ValueError):
    """The image folder cannot be indexed unambiguously (e.g. one file name in two sub-folders)."""


def safe_join(root: Path, name: str) -> Path | None:
    """``root / name`` if it stays inside ``root``; ``None`` for absolute paths or ``..`` escapes.

    A path from a table is data, not trusted: it must never reach files outside the image folder.
    """
    candidate = Path(name)
    if not name or candidate.is_absolute():
        return None
    resolved = (root / candidate).resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        return None
    return resolved


def index_images(root: str | Path) -> dict[str, Path | tuple[Path, Path]]:
    """Every file under ``root`` (recursively, e.g. NIH's ``images_001/`` … ``images_012/``) by file name.

    A name found in two sub-folders maps to both paths: a table that names that file bare stops in
    :func:`resolve` naming both, never a silent pick; a table that gives the relative paths is fine.
    """
    root = Path(root)
    found: dict[str, Path | tuple[Path, Path]] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            earlier = found.get(name)
            found[name] = (
                path if earlier is None else (earlier if isinstance(earlier, Path) else earlier[0], path)
            )
    return found


def resolve(
    root: Path, name: str, by_name: dict[str, Path | tuple[Path, Path]]
) -> tuple[Path | None, str | None]:
    """Where the table's image entry lives: ``(path, None)`` or ``(None, reason)``.

    A bare file name is looked up in the recursive index; an entry with folders is joined to the root
    (and must stay inside it).
    """
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None, "unsafe_path"
    if len(Path(name).parts) == 1:
        path = by_name.get(name)
        if path is None:
            return None, "missing_file"
        if isinstance(path, tuple):
            raise ImageIndexError(
                f"two files named {name!r} under {root}: {path[0]} and {path[1]}; remove one, or give "
                "paths relative to the image folder in the table (e.g. images_001/x.png)"
            )
        # a symbolic link inside the folder may point anywhere: follow it only if it stays inside
        inside = safe_join(root, str(path.relative_to(root))) is not None
        return (path, None) if inside else (None, "unsafe_path")
    path = safe_join(root, name)
    if path is None:
        return None, "unsafe_path"
    return (path, None) if path.is_file() else (None, "missing_file")


DICOM_SUFFIXES = (".dcm", ".dicom")
# Projection radiography (DICOM PS3.3 C.7.3.1.1.1): computed, digital and plain X-ray. Anything else (CT,
# MR, ultrasound, RT dose, secondary captures, ...) would get chest findings it was never meant for.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")


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


def _too_large(pixels: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageReadError("too_large", f"{what}: {pixels:,} pixels, more than {max_pixels:,} are read")


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


def _check_dicom_pixels(dataset, max_pixels: int | None) -> None:
    """What the pixel data will decode to, checked before decoding: one frame's worth of native data
    (not two frames under a header that names none), a compressed frame whose codestream is the size the
    header says, and no more than ``max_pixels``."""
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise ImageReadError("unreadable", f"DICOM Rows × Columns is {rows} × {columns}: no image to read")
    _too_large(rows * columns, max_pixels, "DICOM Rows × Columns")
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
            _too_large(size[0] * size[1], max_pixels, "DICOM codestream")
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


def read_dicom(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """A DICOM radiograph as 8-bit grayscale, displayed as a radiologist would see it.

    Only projection radiographs (Modality CR, DX, RG) with one frame, not palette colour, are read; any
    other file raises :class:`ImageReadError` with its reason. Rescale slope/intercept (modality LUT),
    then the VOI LUT or window centre/width when the file has one, then MONOCHROME1 (white = low values)
    inverted, then the real range scaled to 0..255.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
        has_pixels = "PixelData" in dataset
    except (InvalidDicomError, AttributeError, KeyError, EOFError, ValueError, TypeError) as error:
        raise ImageReadError("unreadable", f"not a readable DICOM file: {decoder_hint(error)}") from error
    if not has_pixels:
        with open(path, "rb") as handle:  # the tag (7FE0,0010) is there: its value was cut off
            truncated = b"\xe0\x7f\x10\x00" in handle.read()
        if truncated:
            raise ImageReadError("truncated", "DICOM file is truncated: its pixel data is cut short")
        raise ImageReadError("unreadable", "DICOM file has no pixel data")
    _check_radiograph(dataset)
    _check_dicom_pixels(dataset, max_pixels)
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


def to_gray8(image: Image.Image) -> np.ndarray:
    """Any pixel format seen in chest X-ray PNGs → 8-bit grayscale.

    L as is; RGB/RGBA/LA/P through luminance (alpha dropped); 16-bit and 32-bit grayscale scaled by
    the image's real value range (a 12-bit image in a 16-bit container must not come out black, and
    values must not wrap around).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return scale_to_uint8(np.asarray(image))
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8)


def center_square(gray: np.ndarray) -> np.ndarray:
    """The central ``min(h, w)`` square, cut exactly as torchxrayvision's ``XRayCenterCrop``."""
    height, width = gray.shape[:2]
    side = min(height, width)
    top, left = height // 2 - side // 2, width // 2 - side // 2
    return gray[top : top + side, left : left + side]


def fit_to_square(gray: np.ndarray, size: int, rule: str = "square", fill: float = 127.5) -> np.ndarray:
    """An 8-bit gray ``H × W`` image fitted to ``size × size`` by ``rule`` (``data.resize``).

    ``square`` returns uint8 (the seed's path, unchanged); ``center_crop`` returns float32 in the same
    0..255 units, unrounded, with ``fill`` (``InputSpec.fill``) as the border value, so that normalising
    it afterwards equals torchxrayvision's normalise-then-resize.
    """
    if rule == "square":
        if gray.shape == (size, size):
            return gray
        # PIL's bilinear filter widens its support when shrinking, so 1024 → 224 is antialiased.
        return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    if rule != "center_crop":
        raise InputSpecError(f"resize rule {rule!r}: one of {', '.join(RESIZE_RULES)}")
    from skimage.transform import resize  # scikit-image is imported only by the rule that needs it

    square = center_square(gray).astype(np.float32)
    out = resize(square, (size, size), mode="constant", cval=fill, preserve_range=True)
    return np.asarray(out, dtype=np.float32)


def to_cache_pixels(fitted: np.ndarray) -> np.ndarray:
    """What the prepared cache stores (uint8): a ``center_crop`` image rounded to the nearest level."""
    if fitted.dtype == np.uint8:
        return fitted
    return np.clip(np.rint(fitted), 0, 255).astype(np.uint8)


def load_gray(
    path: str | Path,
    size: int,
    rule: str = "square",
    fill: float = 127.5,
    max_pixels: int | None = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file (PNG, JPEG, DICOM) to 8-bit gray and fit it to ``size × size`` by ``rule``
    (:func:`chexnet.data.input_spec.fit_to_square`: uint8 for ``square``, float32 for ``center_crop``);
    an image that would decode to more than ``max_pixels`` is refused before it is decoded."""
    return load_gray_sized(path, size, rule, fill, max_pixels)[0]


def decoded_pixels(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> int:
    """How many pixels ``path`` will decode to, read from what the decoder allocates (PNG/JPEG frame
    header; DICOM Rows × Columns, checked against the codestream by :func:`read_dicom`); the service
    reserves memory by it before decoding."""
    if is_dicom(path):
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            pixels = int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0)
        except Exception as error:  # any parser failure: the file is refused as unreadable, alone
            raise ImageReadError("unreadable", f"not a readable DICOM file: {decoder_hint(error)}") from error
    else:
        with Image.open(path) as image:
            pixels = image.width * image.height
    _too_large(pixels, max_pixels, "image")
    return pixels


def load_gray_sized(
    path: str | Path,
    size: int,
    rule: str = "square",
    fill: float = 127.5,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_gray`, and the original ``(width, height)``."""
    if is_dicom(path):
        gray = read_dicom(path, max_pixels)
    else:
        with Image.open(path) as image:
            _too_large(image.width * image.height, max_pixels, "image")
            image.load()
            gray = to_gray8(image)
    return fit_to_square(gray, size, rule, fill), (gray.shape[1], gray.shape[0])


@dataclass(frozen=True)
class Decoded:
    """One decoder result: the image, or why there is none."""

    position: int
    pixels: np.ndarray | None
    reason: str | None = None
    detail: str = ""
    original_size: tuple[int, int] = (0, 0)  # (width, height) before resizing: boxes are in these pixels


def decode_one(task: tuple[int, str, int] | tuple[int, str, int, str]) -> Decoded:
    """Decode ``(position, path, size[, rule])`` to the cache's uint8 pixels; classify failures as empty,
    truncated or unreadable files.

    Runs in decoder threads: it never raises for a bad file, it reports it.
    """
    position, path, size, rule = (*task, "square")[:4]
    try:
        if os.path.getsize(path) == 0:
            return Decoded(position, None, "empty_file", path)
        pixels, original = load_gray_sized(path, size, rule)
        return Decoded(position, to_cache_pixels(pixels), original_size=original)
    except FileNotFoundError:
        return Decoded(position, None, "missing_file", path)
    except Image.DecompressionBombError as error:  # a header declaring e.g. 30000 × 30000 pixels
        return Decoded(position, None, "too_large", f"{path}: {error}")
    except ImageReadError as error:  # DICOM that is not a radiograph, or has no decoder here
        return Decoded(position, None, error.reason, f"{path}: {error}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError, TypeError) as error:
        message = f"{type(error).__name__}: {error}"
        reason = "truncated" if "truncated" in str(error).lower() else "unreadable"
        return Decoded(position, None, reason, message)
