"""Bounding boxes and how well a heat map points at them.

NIH publishes 984 expert boxes (``BBox_List_2017.csv``) in the original image's pixels; the demo set
writes the same layout for everything it draws. A heat map lives on the model's input grid
(``S × S``), so each box is scaled by ``S / width`` and ``S / height`` of its own image first.

Two scores, per finding and overall:

- **pointing game**: the heat map's maximum falls inside a box of that finding;
- **IoBB > 0.5** (Wang et al., CVPR 2017): the map thresholded at a fraction of its maximum, the box
  around its largest connected region, and the share of that box inside the expert box,
  |predicted ∩ expert| / |predicted|, above 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from chexnet.config.data import BOX_LAYOUTS
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelMismatchError

NIH_SPELLING = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv says Infiltrate
BOX_COLUMNS = ["image", "finding", "x", "y", "w", "h"]
# data.bbox_layout: NIH's BBox_List_2017.csv; VinDr-CXR's annotations (one row per reader and box, x_min,
# y_min, x_max, y_max); RSNA Pneumonia's labels (x, y, width, height where Target is 1); or any table by
# data.bbox_columns {image, finding, x, y, w or x2, h or y2, reader (optional)}.
VINDR = {"image": "image_id", "finding": "class_name", "x": "x_min", "y": "y_min", "x2": "x_max",
         "y2": "y_max", "reader": "rad_id"}  # fmt: skip
RSNA = {"image": "patientId", "x": "x", "y": "y", "w": "width", "h": "height"}


class BoxTableError(ChexnetError, ValueError):
    """The box table cannot be read as NIH's BBox_List_2017.csv layout."""


def _by_columns(path: Path, table: pd.DataFrame, names: Mapping[str, str], layout: str) -> pd.DataFrame:
    """A box table whose columns ``names`` says: x, y and w, h or the far corner x2, y2."""
    needed = ["image", "x", "y", *(["w", "h"] if "w" in names else ["x2", "y2"])]
    needed += ["finding"] if layout != "rsna" else []
    missing = [k for k in needed if k not in names] + [c for c in names.values() if c not in table.columns]
    if missing:
        raise BoxTableError(
            f"box table {path} ({layout} layout) lacks {missing}; its columns: {list(table.columns)}. "
            "data.bbox_columns names image, finding, x, y, w|x2, h|y2 and optionally reader"
        )
    out = pd.DataFrame({k: table[names[k]] for k in ("image", "x", "y") if k in names})
    out["finding"] = table[names["finding"]] if "finding" in names else "Pneumonia"
    for size, far, near in (("w", "x2", "x"), ("h", "y2", "y")):
        far_values = pd.to_numeric(table[names[far]], errors="coerce") if far in names else None
        out[size] = (
            table[names[size]]
            if size in names
            else far_values - pd.to_numeric(table[names[near]], errors="coerce")
        )
    out["reader"] = table[names["reader"]].astype(str) if "reader" in names else ""
    no_box = pd.to_numeric(out["x"], errors="coerce").isna() & table[names["x"]].isna()
    return out[~no_box].reset_index(drop=True)  # VinDr's "No finding" rows, RSNA's Target 0: no box


def read_boxes(
    path: str | Path, labels: Sequence[str], aliases: Mapping[str, str] | None = None,
    layout: str = "nih", columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Read a box table in one of :data:`BOX_LAYOUTS`: columns image, finding, x, y, w, h, reader.

    NIH's header (``Bbox [x,y,w,h],,,``) has more commas than the rows have fields, so the header is
    skipped and the six columns are taken by position. VinDr-CXR keeps every reader's box (``reader``:
    ``rad_id``); rows without a box are not boxes. Finding names go through the data's aliases (and
    NIH's ``Infiltrate`` → ``Infiltration``); a finding the model does not have is refused with both
    lists, never guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise BoxTableError(f"box table {path} does not exist (params: data.bbox_table)")
    if layout not in BOX_LAYOUTS:
        raise BoxTableError(f"params: data.bbox_layout must be one of {BOX_LAYOUTS}, got {layout!r}")
    try:
        if layout == "nih":
            boxes = pd.read_csv(path, header=None, skiprows=1, usecols=range(6), names=BOX_COLUMNS)
            boxes["reader"] = ""
        else:
            names = {"vindr": VINDR, "rsna": RSNA}.get(layout) or dict(columns or {})
            boxes = _by_columns(path, pd.read_csv(path), names, layout)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise BoxTableError(f"box table {path} is not in the {layout} layout: {error}") from error
    spelling = NIH_SPELLING | dict(aliases or {})
    boxes["finding"] = boxes["finding"].astype(str).str.strip().map(lambda name: spelling.get(name, name))
    unknown = sorted(set(boxes["finding"]) - set(labels))
    if unknown:
        raise LabelMismatchError(
            f"box table {path} has findings the model does not predict: {unknown}; the model's findings "
            f"are {list(labels)}. Map them with data.aliases or remove those rows"
        )
    for column in ("x", "y", "w", "h"):
        values = pd.to_numeric(boxes[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise BoxTableError(
                f"box table {path}, row {row + 2} (image {boxes['image'].iloc[row]!r}): {column} = "
                f"{boxes[column].iloc[row]!r} is not a number"
            )
        boxes[column] = values.astype(float)
    return boxes


def scale_box(
    x: float, y: float, w: float, h: float, width: int, height: int, size: int
) -> tuple[float, ...]:
    """A box in an image of ``width × height`` pixels, on the ``size × size`` heat-map grid."""
    sx, sy = size / width, size / height
    return x * sx, y * sy, w * sx, h * sy


def _inside(row: float, col: float, box: tuple[float, ...]) -> bool:
    x, y, w, h = box
    return x <= col + 0.5 <= x + w and y <= row + 0.5 <= y + h


def pointing_hit(heat: np.ndarray, boxes: list[tuple[float, ...]]) -> bool:
    """Whether the map's maximum (pixel centre) lies inside any of the boxes."""
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return any(_inside(row, col, box) for box in boxes)


def predicted_box(heat: np.ndarray, fraction: float = 0.5) -> tuple[int, int, int, int] | None:
    """Box ``(x, y, w, h)`` around the largest region where ``heat ≥ fraction × max``."""
    peak = float(heat.max())
    if peak <= 0:
        return None
    regions, count = ndimage.label(heat >= fraction * peak)
    sizes = ndimage.sum(np.ones_like(heat), regions, index=range(1, count + 1))
    largest = int(np.argmax(sizes)) + 1
    rows, cols = np.nonzero(regions == largest)
    x0, y0 = int(cols.min()), int(rows.min())
    return x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1


def iobb(predicted: tuple[float, ...], expert: tuple[float, ...]) -> float:
    """|predicted ∩ expert| / |predicted|."""
    px, py, pw, ph = predicted
    ex, ey, ew, eh = expert
    overlap_w = max(0.0, min(px + pw, ex + ew) - max(px, ex))
    overlap_h = max(0.0, min(py + ph, ey + eh) - max(py, ey))
    return overlap_w * overlap_h / max(pw * ph, 1e-9)


def score_case(
    heat: np.ndarray, finding: str, scaled: list[tuple[float, ...]], readers: list[str], fraction: float
) -> dict[str, object]:
    """One (image, finding): a hit when the map's maximum is in any reader's box, IoBB > 0.5 against the
    best-overlapping box, and each reader's own hit (``readers``: who drew each box)."""
    predicted = predicted_box(heat, fraction)
    best = max((iobb(predicted, box) for box in scaled), default=0.0) if predicted else 0.0
    own = {r: pointing_hit(heat, [b for b, who in zip(scaled, readers, strict=True) if who == r])
           for r in set(readers)}  # fmt: skip
    return {
        "finding": finding,
        "hit": pointing_hit(heat, scaled),
        "iobb_over_half": best > 0.5,
        "readers": own,
    }


def pointing_by_group(records: list[dict], groups: pd.DataFrame | None) -> dict[str, object]:
    """The pointing game per subgroup (sex, age band with the default bands, view, ...): do the heat maps
    point as well for everyone? ``records`` carry each case's cache ``row``; ``groups`` is the cache's
    groups.parquet. A group's count is its boxes (cases), not its patients: no interval here."""
    from chexnet.evaluation.subgroups import attribute_groups

    if groups is None or len(groups.columns) <= 1 or not records:
        return {}
    rows = [r["row"] for r in records]
    hits = np.array([r["hit"] for r in records], dtype=float)
    out: dict[str, object] = {}
    for attribute, names in attribute_groups(groups, rows).items():
        out[attribute] = {
            g: {"cases": int((names == g).sum()), "pointing_game": float(hits[names == g].mean())}
            for g in sorted(set(names))
        }
    return out


def localisation_scores(
    records: list[dict], labels: Sequence[str], groups: pd.DataFrame | None = None
) -> dict[str, object]:
    """Summarise per-(image, finding) results ``{finding, hit, iobb_over_half, readers}`` per finding and
    overall; a hit is the map's maximum inside any reader's box. With several readers, ``per_reader``
    scores each reader's own boxes (``readers``: reader → hit, for the readers who drew that finding)."""
    frame = pd.DataFrame(records, columns=["finding", "hit", "iobb_over_half"])
    by_reader: dict[str, list[bool]] = {}
    for record in records:
        for reader, hit in record.get("readers", {}).items():
            by_reader.setdefault(reader, []).append(hit)
    per_finding = {
        label: {
            "cases": len(part),
            "pointing_game": float(part["hit"].mean()),
            "iobb_over_0.5": float(part["iobb_over_half"].mean()),
        }
        for label, part in frame.groupby("finding", sort=False)
    }
    return {
        "cases": len(frame),
        "pointing_game": float(frame["hit"].mean()) if len(frame) else None,
        "iobb_over_0.5": float(frame["iobb_over_half"].mean()) if len(frame) else None,
        "per_finding": {label: per_finding[label] for label in labels if label in per_finding},
        **({"per_reader": {r: {"cases": len(h), "pointing_game": float(np.mean(h))}
                           for r, h in sorted(by_reader.items())}} if len(by_reader) > 1 else {}),
        **({"per_group": by_group} if (by_group := pointing_by_group(records, groups)) else {}),
    }  # fmt: skip
