"""Reading the user's table and images, and the prepared uint8 image cache that training reads.

The seed decodes a 1024×1024 PNG and resizes it for every sample of every epoch. Here every image is
decoded and resized **once** by the prepare stage into a single ``N × S × S`` uint8 array on disk
(``images.npy``, read back by memory map) beside an index table (``index.parquet``: row → image name,
patient, 14-label vector). Later stages never touch the PNGs again.

Files written by prepare (the contract with later stages):

- ``images.npy``: NumPy ``.npy``, dtype uint8, shape ``(N, S, S)``, one 8-bit grayscale image a row.
- ``index.parquet``: columns ``row`` (int, row in images.npy), ``image`` (file name as in the table),
  ``patient`` (string), then one uint8 column per label in ``LABELS`` order.
- ``rejects.csv``: rows that were skipped: ``image``, ``table_row``, ``reason``, ``detail``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm import tqdm

from chexnet import io
from chexnet.errors import ChexnetError
from chexnet.labels import LABELS, binarize

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGES_FILE, INDEX_FILE, REJECTS_FILE = "images.npy", "index.parquet", "rejects.csv"


class DataError(ChexnetError, ValueError):
    """The input table or image folder cannot be used; the message says which file and what to do."""


# --- the table -----------------------------------------------------------------------------------
def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV table (by extension; ``.csv.gz`` too)."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"table {path} does not exist: set data.table in params.yaml to your Parquet/CSV file"
        )
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if ".csv" in suffixes:
        return pd.read_csv(path)
    raise DataError(f"table {path}: unknown format {path.suffix!r}; use .parquet or .csv")


def require_columns(table: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """Fail with the param name, the missing column and the columns present."""
    for param, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"table {path} has no column {column!r} (params: data.{param}); "
                f"columns present: {', '.join(map(repr, table.columns))}"
            )


def image_path(root: Path, name: str) -> Path | None:
    """``root / name`` if it stays inside ``root``; ``None`` for absolute paths or ``..`` escapes.

    A path from a table is data, not trusted: it must never reach files outside the image folder.
    """
    candidate = Path(name)
    if candidate.is_absolute() or not name:
        return None
    resolved = (root / candidate).resolve()
    try:
        resolved.relative_to(root.resolve())
    except ValueError:
        return None
    return resolved


# --- decoding -------------------------------------------------------------------------------------
def to_gray8(image: Image.Image) -> np.ndarray:
    """Any pixel format seen in chest X-ray PNGs → 8-bit grayscale.

    L as is; RGB/RGBA/LA/P through luminance (alpha dropped); 16-bit and 32-bit grayscale scaled by
    the image's real value range (a 12-bit image in a 16-bit container must not come out black, and
    values must not wrap around).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros(values.shape, np.uint8)
        return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8)


def load_gray(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file and resize it (antialiased) to ``size × size`` 8-bit grayscale."""
    with Image.open(path) as image:
        image.load()
        gray = to_gray8(image)
    if gray.shape != (size, size):
        # PIL's bilinear filter widens its support when shrinking, so 1024 → 224 is antialiased.
        gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR))
    return gray


# --- the prepared cache ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareReport:
    rows_in_table: int
    rows_selected: int
    images_written: int
    duplicates_dropped: int
    rejected: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "rows_in_table": self.rows_in_table,
            "rows_selected": self.rows_selected,
            "images_written": self.images_written,
            "duplicates_dropped": self.duplicates_dropped,
            "rejected": dict(self.rejected),
            "rejected_total": int(sum(self.rejected.values())),
        }


def prepare_cache(
    table: pd.DataFrame,
    *,
    table_path: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    image_column: str,
    label_column: str,
    patient_column: str,
    image_size: int,
    subset: int,
    seed: int,
) -> PrepareReport:
    """Binarise labels, take the seeded subset, decode each image once into the cache under ``out_dir``."""
    require_columns(
        table,
        {"image_column": image_column, "label_column": label_column, "patient_column": patient_column},
        table_path,
    )
    rows_in_table = len(table)
    table = table.reset_index(drop=True)
    table["table_row"] = np.arange(rows_in_table)
    rejects: list[dict[str, object]] = []

    def reject(rows: pd.DataFrame, reason: str, detail: str) -> None:
        rejects.extend(
            {
                "image": str(r[image_column]),
                "table_row": int(r["table_row"]),
                "reason": reason,
                "detail": detail,
            }
            for _, r in rows.iterrows()
        )

    empty = table[label_column].isna() | (table[label_column].astype(str).str.strip() == "")
    reject(table[empty], "empty_label", f"column {label_column!r} is empty")
    table = table[~empty]
    duplicated = table.duplicated(subset=[image_column], keep="first")
    duplicates_dropped = int(duplicated.sum())
    table = table[~duplicated]
    labels = binarize(table[label_column].astype(str), column=label_column)

    n_selected = min(subset, len(table))
    chosen = np.sort(np.random.default_rng(seed).choice(len(table), size=n_selected, replace=False))
    table, labels = table.iloc[chosen].reset_index(drop=True), labels[chosen]

    root = Path(image_root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist: set data.images in params.yaml")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: list[int] = []
    with io.atomic_path(out_dir / IMAGES_FILE) as tmp:
        cache = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(n_selected, image_size, image_size)
        )
        names = table[image_column].astype(str).tolist()
        table_rows = table["table_row"].tolist()
        for i, name in enumerate(tqdm(names, desc="prepare", unit="img")):
            path = image_path(root, name)
            record = {"image": name, "table_row": int(table_rows[i])}
            if path is None:
                rejects.append(
                    record | {"reason": "unsafe_path", "detail": "absolute or outside the image folder"}
                )
                continue
            if not path.is_file():
                rejects.append(record | {"reason": "missing_file", "detail": str(path)})
                continue
            try:
                cache[len(kept)] = load_gray(path, image_size)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                rejects.append(
                    record | {"reason": "unreadable", "detail": f"{type(error).__name__}: {error}"}
                )
                continue
            kept.append(i)
        cache.flush()
        del cache
    _shrink_cache(out_dir / IMAGES_FILE, len(kept))

    index = pd.DataFrame(
        {
            "row": np.arange(len(kept)),
            "image": np.asarray(names, dtype=object)[kept],
            "patient": table[patient_column].astype(str).to_numpy()[kept],
        }
    )
    for j, label in enumerate(LABELS):
        index[label] = labels[kept, j]
    io.write_parquet(out_dir / INDEX_FILE, index)
    reject_frame = pd.DataFrame(rejects, columns=["image", "table_row", "reason", "detail"])
    io.write_csv(out_dir / REJECTS_FILE, reject_frame)
    return PrepareReport(
        rows_in_table=rows_in_table,
        rows_selected=n_selected,
        images_written=len(kept),
        duplicates_dropped=duplicates_dropped,
        rejected=reject_frame["reason"].value_counts().to_dict(),
    )


def _shrink_cache(path: Path, n_kept: int) -> None:
    """Rewrite the cache without the tail left empty by rejected images (only when some were)."""
    images = np.load(path, mmap_mode="r")
    if images.shape[0] == n_kept:
        return
    with io.atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n_kept, *images.shape[1:]))
        for start in range(0, n_kept, 1024):
            stop = min(start + 1024, n_kept)
            out[start:stop] = images[start:stop]
        out.flush()
        del out


def load_index(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(prepared_dir) / INDEX_FILE)


def label_matrix(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(LABELS)].to_numpy(dtype=np.float32)


# --- feeding the model ----------------------------------------------------------------------------
class CachedImages(Dataset):
    """Rows of the prepared cache as ``(uint8 1×S×S tensor, float 14-vector)``.

    The memory map is opened lazily in each DataLoader worker (a mapped file does not pickle well and
    each process should map it itself). Normalisation happens on the device, batched, in
    :func:`normalize_batch`, not per sample in Python.
    """

    def __init__(self, prepared_dir: str | Path, rows: np.ndarray, labels: np.ndarray):
        self.path = Path(prepared_dir) / IMAGES_FILE
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.float32)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        image = torch.from_numpy(np.array(self._images[self.rows[i]]))
        return image.unsqueeze(0), self.labels[i]


def normalize_batch(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 ``B×1×S×S`` → float ``B×3×S×S`` on ``device``, ImageNet-normalised (the seed's transform).

    Grayscale is repeated to three channels, which is exactly what the seed's ``convert("RGB")`` does.
    """
    images = images.to(device, non_blocking=True).float().div_(255.0).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def split_dataset(prepared_dir: str | Path, split: pd.DataFrame, name: str) -> CachedImages:
    """The rows of one split (``train``/``val``/``test``) of ``split.parquet`` as a dataset."""
    part = split[split["split"] == name]
    if part.empty:
        raise DataError(f"split {name!r} is empty: use more images or change split fractions in params.yaml")
    return CachedImages(prepared_dir, part["row"].to_numpy(), label_matrix(part))
