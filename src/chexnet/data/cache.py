"""The prepared cache: the file contract between the prepare stage and every stage after it.

The seed decodes a 1024×1024 PNG and resizes it for every sample of every epoch. Here every image is
decoded and resized **once** by the prepare stage (:mod:`chexnet.data.prepare`) into a single ``N × S × S``
uint8 array on disk (``images.npy``, read back by memory map) beside an index table and the label list.
Later stages read only these files, through this module, which knows nothing of how tables are read or
images decoded: so a change there (a new preset, DICOM windowing, the demo painter) leaves train,
evaluate and explain untouched in ``dvc status`` unless the cache itself comes out different.

Files under ``data/prepared/``:

- ``images.npy``: NumPy ``.npy``, dtype uint8, shape ``(N, S, S)``, one 8-bit grayscale image a row.
- ``index.parquet``: columns ``row`` (int, row in images.npy), ``image`` (file name as in the table),
  ``patient`` (string), ``width`` and ``height`` (the original image's pixels, which bounding boxes
  refer to), then one column per finding in the label list's order: uint8 0/1, or nullable UInt8 with
  nulls where a label is masked (uncertain or blank under the ``ignore`` policies of wide tables).
- ``labels.json``: ``labels`` (names in output-unit order), ``source`` (from_data | nih14 | explicit),
  ``resize`` (how the images were fitted to S × S: ``square`` or ``center_crop``, ``data.resize``;
  absent in caches from before 2026-12-02: ``square``), ``no_finding``, ``positives_in_table``,
  ``positives_in_cache``, ``masked_in_table``, ``uncertain_in_table``, ``dropped_rare``, ``ignored``.
- ``rejects.csv``: rows that were skipped: ``image``, ``table_row``, ``reason``, ``detail``.
- ``groups.parquet``: ``row`` (as in the index), then one column per subgroup attribute prepare carried
  (``sex`` F/M/other/unknown, ``age`` float years or null, ``view`` PA/AP/lateral/..., any
  ``data.subgroups`` column as text): :mod:`chexnet.data.groups`. Absent in older caches: no subgroups.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LABELS_FILE, LabelList, read_labels_json

IMAGES_FILE, INDEX_FILE, REJECTS_FILE = "images.npy", "index.parquet", "rejects.csv"
__all__ = ["IMAGES_FILE", "INDEX_FILE", "LABELS_FILE", "REJECTS_FILE", "CacheError", "image_size",
           "label_matrix", "load_groups", "load_images", "load_index", "load_labels",
           "require_rule", "resize_rule"]  # fmt: skip


class CacheError(ChexnetError, ValueError):
    """The prepared cache does not hold what a later stage needs: rerun prepare."""


def load_index(prepared_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(prepared_dir) / INDEX_FILE)


def load_groups(prepared_dir: str | Path) -> pd.DataFrame:
    """The subgroup attributes of each cached image, by ``row``; no columns but ``row`` when none."""
    path = Path(prepared_dir) / "groups.parquet"
    if not path.is_file():
        return pd.DataFrame({"row": load_index(prepared_dir)["row"]})
    return pd.read_parquet(path)


def load_labels(prepared_dir: str | Path) -> LabelList:
    """The label list prepare chose (``labels.json`` beside the cache)."""
    return read_labels_json(Path(prepared_dir) / LABELS_FILE)


def load_images(prepared_dir: str | Path) -> np.ndarray:
    """The ``N × S × S`` uint8 stack, memory-mapped (read-only): nothing is loaded until it is used."""
    return np.load(Path(prepared_dir) / IMAGES_FILE, mmap_mode="r")


def resize_rule(prepared_dir: str | Path) -> str:
    """How the cache's images were fitted to a square (``data.resize``); a model fed otherwise is refused."""
    path = Path(prepared_dir) / LABELS_FILE
    if not path.is_file():
        raise CacheError(f"{path} does not exist: run the prepare stage (dvc repro prepare) first")
    return str(json.loads(path.read_text(encoding="utf-8")).get("resize", "square"))


def require_rule(prepared_dir: str | Path, model_rule: str, model_path: str | Path) -> None:
    """Refuse a model whose input rule is not the cache's: its probabilities would be silently wrong."""
    rule = resize_rule(prepared_dir)
    if rule != model_rule:
        raise CacheError(
            f"model {model_path} expects images fitted by {model_rule!r} (its record's input rule), but "
            f"the prepared cache was made with data.resize: {rule}; set data.resize: {model_rule} in "
            "params.yaml and run dvc repro"
        )


def image_size(prepared_dir: str | Path) -> int:
    """The side ``S`` the cache was prepared at."""
    return int(load_images(prepared_dir).shape[-1])


def label_matrix(frame: pd.DataFrame, labels: LabelList | tuple[str, ...] | list[str]) -> np.ndarray:
    """``N × K`` float32 truth in the list's order: 1, 0, or NaN where the label is masked (uncertain
    or blank under ``ignore``). NaN, never a silent 0: a reader that forgets the mask fails loudly."""
    names = list(labels.names if isinstance(labels, LabelList) else labels)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise CacheError(f"the prepared index has no column for {missing}: rerun prepare (dvc repro prepare)")
    return frame[names].astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
