"""Finding and decoding image files: path safety, the recursive file-name index, any pixel format."""

from __future__ import annotations

import os
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from chexnet.core.errors import ChexnetError
from chexnet.data.dicom import dicom_gray, is_dicom, open_dicom
from chexnet.data.input_spec import RESIZE_RULES, InputSpec, InputSpecError
from chexnet.data.pixels import MAX_PIXELS, ImageReadError, refuse_over, scale_to_uint8


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


def open_image(path: str | Path) -> Image.Image:
    """``Image.open``, with a file PIL cannot identify said as an unreadable image without its path (the
    caller names the file: a service's upload lives under a temporary name the client never sent)."""
    try:
        return Image.open(path)
    except UnidentifiedImageError as error:
        raise ImageReadError(
            "unreadable", "not an image PIL can read (PNG, JPEG) nor a DICOM file"
        ) from error


class OpenedImage:
    """An image file opened once: its header read and checked, its pixels not yet decoded.

    ``pixels`` is what the decode will allocate, read from the header (PNG/JPEG frame header; DICOM
    Rows × Columns, checked against its codestream), refused over ``max_pixels`` before any decode;
    :meth:`gray` then decodes from the same open file. A service reserves memory between the two
    without reading the file twice. ``source`` is a path, or bytes already in memory (an upload, never
    written to disk), whose kind the caller has typed by content (``dicom``).
    """

    def __init__(
        self, source: str | Path | bytes, max_pixels: int | None = MAX_PIXELS, *, dicom: bool | None = None
    ):
        if isinstance(source, bytes):
            handle = BytesIO(source)
            dicom = source[128:132] == b"DICM" if dicom is None else dicom
        else:
            handle = source
            dicom = is_dicom(source) if dicom is None else dicom
        self._dataset, self._image = None, None
        if dicom:
            self._dataset = open_dicom(handle, max_pixels)
            self.width, self.height = int(self._dataset.Columns), int(self._dataset.Rows)
            return
        self._image = open_image(handle)
        self.width, self.height = self._image.size
        try:
            refuse_over(self.pixels, max_pixels, "image")
        except ImageReadError:
            self.close()
            raise

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def dataset(self):
        """The opened DICOM dataset (checked by :func:`open_dicom`), None for PNG and JPEG: what results
        written as DICOM take their study and patient from."""
        return self._dataset

    def gray(self) -> np.ndarray:
        """The decoded image as 8-bit gray (DICOM as a radiologist sees it: :func:`dicom_gray`)."""
        if self._dataset is not None:
            return dicom_gray(self._dataset)
        self._image.load()
        return to_gray8(self._image)

    def fitted(self, spec: InputSpec) -> np.ndarray:
        """The decoded image as a model's input rule fits it: to ``spec.size`` by ``spec.resize``."""
        if spec.size is None:
            raise InputSpecError(f"input rule {spec.as_dict()} has no size to fit an image to")
        return fit_to_square(self.gray(), spec.size, spec.resize, spec.fill)

    def close(self) -> None:
        if self._image is not None:
            self._image.close()

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_gray(
    path: str | Path,
    size: int,
    rule: str = "square",
    fill: float = 127.5,
    max_pixels: int | None = MAX_PIXELS,
) -> np.ndarray:
    """Decode an image file (PNG, JPEG, DICOM) to 8-bit gray and fit it to ``size × size`` by ``rule``
    (:func:`fit_to_square`: uint8 for ``square``, float32 for ``center_crop``); an image that would
    decode to more than ``max_pixels`` is refused before it is decoded."""
    return load_gray_sized(path, size, rule, fill, max_pixels)[0]


def load_input(path: str | Path, spec: InputSpec, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """An image file (PNG, JPEG, DICOM) fitted as a model's input rule says (:meth:`OpenedImage.fitted`)."""
    with OpenedImage(path, max_pixels) as opened:
        return opened.fitted(spec)


def load_gray_sized(
    path: str | Path,
    size: int,
    rule: str = "square",
    fill: float = 127.5,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_gray`, and the original ``(width, height)``."""
    with OpenedImage(path, max_pixels) as opened:
        gray = opened.gray()
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
