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

from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelMismatchError

NIH_SPELLING = {"Infiltrate": "Infiltration"}  # BBox_List_2017.csv says Infiltrate
BOX_COLUMNS = ["image", "finding", "x", "y", "w", "h"]


class BoxTableError(ChexnetError, ValueError):
    """The box table cannot be read as NIH's BBox_List_2017.csv layout."""


def read_boxes(
    path: str | Path, labels: Sequence[str], aliases: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Read a box table in NIH's layout: image, finding, then x, y, w, h in the next four columns.

    NIH's header (``Bbox [x,y,w,h],,,``) has more commas than the rows have fields, so the header is
    skipped and the six columns are taken by position. Finding names go through the data's aliases
    (and NIH's ``Infiltrate`` → ``Infiltration``); a finding the model does not have is refused with
    both lists, never guessed.
    """
    path = Path(path)
    if not path.is_file():
        raise BoxTableError(f"box table {path} does not exist (params: data.bbox_table)")
    try:
        boxes = pd.read_csv(path, header=None, skiprows=1, usecols=range(6), names=BOX_COLUMNS)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise BoxTableError(f"box table {path} is not in NIH's BBox_List_2017.csv layout: {error}") from error
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


def localisation_scores(records: list[dict], labels: Sequence[str]) -> dict[str, object]:
    """Summarise per-(image, finding) results ``{finding, hit, iobb_over_half}`` per finding and overall."""
    frame = pd.DataFrame(records, columns=["finding", "hit", "iobb_over_half"])
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
    }
