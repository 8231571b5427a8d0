"""The one definition of the label vocabulary and how finding strings become label vectors.

The order of ``LABELS`` is the column order of every label matrix, model output and metrics table in
the project. It is NIH ChestX-ray14's order as used by CheXNet (Rajpurkar et al. 2017) and
arnoweng/CheXNet, so per-class figures line up with the paper. Never reorder it: a saved model's
output unit *i* means ``LABELS[i]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from sklearn.preprocessing import MultiLabelBinarizer

from chexnet.errors import ChexnetError

LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_CLASSES = len(LABELS)
NO_FINDING = "No Finding"
SEPARATOR = "|"


class UnknownLabelError(ChexnetError, ValueError):
    """A finding outside the vocabulary: a typo must never turn into silent negatives."""


def split_findings(cell: str) -> list[str]:
    """Split one ``|``-separated cell into findings, dropping ``No Finding`` (it is not a class)."""
    parts = [part.strip() for part in str(cell).split(SEPARATOR)]
    return [part for part in parts if part and part != NO_FINDING]


def binarize(cells: Iterable[str], *, column: str = "patologia") -> np.ndarray:
    """Turn finding strings into an ``N × 14`` uint8 matrix in ``LABELS`` order.

    Uses scikit-learn's MultiLabelBinarizer over the fixed vocabulary (as the seed does), but first
    checks every finding against it, so that ``Efusion`` fails loudly with its count instead of
    becoming an all-negative row.
    """
    findings = [split_findings(cell) for cell in cells]
    unknown = Counter(label for row in findings for label in row if label not in LABELS)
    if unknown:
        listed = ", ".join(f"{label!r} ×{count}" for label, count in unknown.most_common())
        raise UnknownLabelError(
            f"column {column!r} holds findings outside the 14-label NIH vocabulary: {listed}. "
            f"Known labels: {', '.join(LABELS)} (and {NO_FINDING!r}). Fix the spelling in the table."
        )
    binarizer = MultiLabelBinarizer(classes=list(LABELS))
    return binarizer.fit_transform(findings).astype(np.uint8)


def findings_string(row: np.ndarray) -> str:
    """The inverse of :func:`binarize` for one row: ``"Effusion|Mass"`` or ``"No Finding"``."""
    names = [label for label, flag in zip(LABELS, row, strict=True) if flag]
    return SEPARATOR.join(names) if names else NO_FINDING
