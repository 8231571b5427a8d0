"""The one place that says which findings a model learns, in which order, and how table values become labels.

The seed binarises its ``patologia`` column with scikit-learn's ``MultiLabelBinarizer`` fitted on the
data: its classes are the findings the table holds (``No Finding`` excluded) in **sorted** order, and a
checkpoint saved by the seed's code has its output units in that order. So here the label list is a
property of the data and of the model, never a constant:

- ``from_data`` (the seed's rule): every finding in the whole table, sorted as MultiLabelBinarizer sorts;
- ``nih14``: NIH ChestX-ray14's 14 findings in CheXNet's order (figures that line up with the paper);
- an explicit list of names, in the order given.

prepare writes the list it chose to ``data/prepared/labels.json``; train writes it beside the model
(``models/chexnet_model.json``); every later reader goes by name and refuses lists that do not fit.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chexnet.core.errors import ChexnetError

# NIH ChestX-ray14's findings in the order of CheXNet (Rajpurkar et al. 2017) and arnoweng/CheXNet.
NIH14: tuple[str, ...] = (
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
NO_FINDING = "No Finding"  # the default token for "nothing found"; data.no_finding changes it
SEPARATOR = "|"
LABEL_MODES = ("auto", "from_data", "nih14")
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")  # the CheXpert paper's U-Ignore, U-Zeros, U-Ones
BLANK_POLICIES = ("negative", "ignore")
LABELS_FILE = "labels.json"
# Columns of the prepared index and the prediction tables that a finding may not be named like.
RESERVED_NAMES = frozenset({"row", "image", "patient", "width", "height", "split", "table_row", "view"})


class UnknownLabelError(ChexnetError, ValueError):
    """A finding outside the chosen list: a typo must never turn into silent negatives."""


class RareLabelError(ChexnetError, ValueError):
    """A finding with too few positives to be learnt or measured."""


class LabelMismatchError(ChexnetError, ValueError):
    """Two label lists that must agree (model, data, thresholds, boxes) do not."""


@dataclass(frozen=True)
class LabelOptions:
    """How findings are read and which are kept (params: ``labels`` and the ``data`` label keys)."""

    spec: str | tuple[str, ...] = "auto"  # auto | from_data | nih14 | explicit names
    no_finding: str = NO_FINDING
    aliases: Mapping[str, str] = field(
        default_factory=dict
    )  # exact name → name, e.g. Infiltrate: Infiltration
    ignore: tuple[str, ...] = ()  # findings removed from the table before anything else (counted)
    min_positives: int = 10
    drop_rare: bool = False
    uncertain: str | Mapping[str, str] = "ignore"  # wide tables: ignore | zeros | ones, or per finding
    blank: str = "negative"  # wide tables: negative | ignore

    def mode(self, preset: str) -> str | tuple[str, ...]:
        """``auto`` made concrete: NIH's own table → nih14 (the paper's order), anything else → from_data."""
        if self.spec == "auto":
            return "nih14" if preset == "nih" else "from_data"
        return self.spec

    def uncertain_policy(self, finding: str) -> str:
        if isinstance(self.uncertain, str):
            return self.uncertain
        return self.uncertain.get(finding, self.uncertain.get("default", "ignore"))


@dataclass(frozen=True)
class LabelList:
    """A model's findings in output-unit order, and where the list came from."""

    names: tuple[str, ...]
    source: str  # from_data | nih14 | explicit | seed_sorted (a checkpoint with no list beside it) | given

    def __post_init__(self) -> None:
        check_names(self.names, f"label list ({self.source})")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)


def check_names(names: Sequence[str], where: str) -> None:
    """Names must be distinct, non-empty strings that cannot be mistaken for the index's own columns."""
    if not names:
        raise LabelMismatchError(f"{where}: the list of findings is empty")
    bad = [n for n in names if not isinstance(n, str) or not n.strip() or n != n.strip()]
    if bad:
        raise LabelMismatchError(f"{where}: finding names must be non-empty text without outer spaces: {bad}")
    repeated = [n for n, c in Counter(names).items() if c > 1]
    if repeated:
        raise LabelMismatchError(f"{where}: findings named twice: {repeated}")
    clashing = [n for n in names if n in RESERVED_NAMES or n.startswith("p_")]
    if clashing:
        raise LabelMismatchError(
            f"{where}: {clashing} cannot be finding names (they clash with the columns "
            f"{sorted(RESERVED_NAMES)} or the p_<finding> probability columns); rename them with data.aliases"
        )


def binarizer_order(names: Iterable[str]) -> tuple[str, ...]:
    """The order scikit-learn's MultiLabelBinarizer gives, fitted with no ``classes=`` (the seed's).

    scikit-learn is imported here, not at the top: it pulls in scipy (about 1 s), and every stage and
    command imports this module, most of them never binarising anything (``chexnet --help``, split)."""
    from sklearn.preprocessing import MultiLabelBinarizer

    return tuple(str(c) for c in MultiLabelBinarizer().fit([sorted(set(names))]).classes_)


def split_findings(
    cell: object, *, no_finding: str = NO_FINDING, aliases: Mapping[str, str] | None = None
) -> list[str]:
    """One ``|``-separated cell → its findings, aliases applied, the no-finding token dropped.

    Exact tokens only (after trimming spaces): ``Effusion`` never matches ``Pleural Effusion``.
    """
    aliases = aliases or {}
    parts = (aliases.get(p.strip(), p.strip()) for p in str(cell).split(SEPARATOR))
    return [part for part in parts if part and part != no_finding]


def choose(
    positives: Mapping[str, int], options: LabelOptions, preset: str, *, where: str
) -> tuple[LabelList, dict[str, int]]:
    """The label list for a table whose findings have these positive counts (whole table, pre-subset).

    Returns the list and the findings dropped as too rare (with their counts). Under ``nih14`` or an
    explicit list, a finding outside the list stops here with its count; under any mode a kept finding
    with fewer than ``min_positives`` positives stops too, unless ``drop_rare`` drops it.
    """
    mode = options.mode(preset)
    if mode == "from_data":
        # every finding the table names, positive or not: a wide table's all-blank or all-uncertain
        # column is a finding with 0 positives (too rare, said below), never a silent disappearance
        names, source = binarizer_order(positives), "from_data"
    else:
        names, source = (NIH14, "nih14") if mode == "nih14" else (tuple(mode), "explicit")
        unknown = {n: c for n, c in positives.items() if n not in names and c > 0}
        if unknown:
            listed = ", ".join(f"{n!r} ×{c}" for n, c in sorted(unknown.items(), key=lambda kv: -kv[1]))
            raise UnknownLabelError(
                f"{where} holds findings outside labels ({source}: {', '.join(names)}): {listed}. "
                "Fix the spelling in the table, map them with data.aliases, add them to labels, "
                "or remove them with data.ignore_findings"
            )
    rare = {n: int(positives.get(n, 0)) for n in names if positives.get(n, 0) < options.min_positives}
    if rare and not options.drop_rare:
        listed = ", ".join(f"{n!r} ×{c}" for n, c in rare.items())
        raise RareLabelError(
            f"{where}: findings with fewer than data.min_positives = {options.min_positives} positives "
            f"in the whole table: {listed}. Too few to learn or measure; set data.drop_rare: true to "
            "drop them, or lower data.min_positives"
        )
    kept = tuple(n for n in names if n not in rare)
    if not kept:
        raise RareLabelError(f"{where}: no finding has {options.min_positives} or more positives")
    return LabelList(kept, source), rare


def binarize(rows: Sequence[Sequence[str]], labels: LabelList) -> np.ndarray:
    """Finding lists → ``N × K`` uint8 in the list's order (MultiLabelBinarizer with those classes).

    Every finding must be in the list already (:func:`choose` checked the table); anything else is a bug.
    """
    from sklearn.preprocessing import MultiLabelBinarizer  # imported on use: binarizer_order says why

    binarizer = MultiLabelBinarizer(classes=list(labels.names))
    known = set(labels.names)
    return binarizer.fit_transform([[f for f in row if f in known] for row in rows]).astype(np.uint8)


def findings_string(row: np.ndarray, labels: Sequence[str], no_finding: str = NO_FINDING) -> str:
    """One label row back to a cell: ``"Effusion|Mass"``, ``no_finding`` when empty, ``?`` marks masked."""
    names = []
    for label, flag in zip(labels, np.asarray(row, dtype=float), strict=True):
        if np.isnan(flag):
            names.append(f"{label}?")
        elif flag == 1:
            names.append(label)
    return SEPARATOR.join(names) if names else no_finding


def seed_checkpoint_labels(n_outputs: int) -> LabelList | None:
    """A checkpoint with no list beside it was saved by the seed's code: MultiLabelBinarizer's sorted
    order. With 14 units that is NIH's 14 findings sorted; any other count cannot be guessed."""
    if n_outputs == len(NIH14):
        return LabelList(binarizer_order(NIH14), "seed_sorted")
    return None


def parse_labels_argument(value: str) -> LabelList:
    """``--labels``: a file (JSON list or ``{"labels": [...]}``, or one name a line) or "A,B,C"."""
    path = Path(value)
    if path.is_file():
        raw = path.read_bytes()[: 1 << 20]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text or path.stat().st_size > 1 << 20:
            raise LabelMismatchError(
                f"--labels {path} is not a text file of finding names (a JSON list, or one name a line, "
                "under 1 MB); give that file, or the names as 'A,B,C'"
            )
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            names = document.get("labels") if isinstance(document, dict) else document
            if not isinstance(names, list):
                raise LabelMismatchError(f"--labels {path}: expected a JSON list or {{'labels': [...]}}")
        if not names:
            raise LabelMismatchError(f"--labels {path} names no finding")
        return LabelList(tuple(str(n) for n in names), "given")
    return LabelList(tuple(n.strip() for n in value.split(",") if n.strip()), "given")


def file_safe(name: str) -> str:
    """A finding name as a file name: letters (any script), digits, ``_ - .`` kept, anything else → ``_``."""
    return re.sub(r"[^\w.\-]", "_", name).strip(".") or "_"


def write_labels_json(path: Path, labels: LabelList, **extra: Any) -> None:
    from chexnet.core import io

    io.write_json(path, {"labels": list(labels.names), "source": labels.source, **extra})


def read_labels_json(path: str | Path) -> LabelList:
    path = Path(path)
    if not path.is_file():
        raise LabelMismatchError(f"{path} does not exist: run the prepare stage (dvc repro prepare) first")
    document = json.loads(path.read_text(encoding="utf-8"))
    return LabelList(tuple(document["labels"]), str(document.get("source", "given")))
