"""``chexnet compare A B``: where each model's predictions come from, and the check that they are the
same test images (the statistics: :mod:`chexnet.evaluation.compare`).

A and B are each either a predictions file (``data/predictions/test.parquet`` as the evaluate stage
writes it: ``image``, ``patient``, each finding's truth and ``p_<finding>``) or a revision DVC knows: a
Git commit, branch or tag, or a ``dvc exp`` name, as ``dvc metrics diff`` takes them, read from the DVC
cache with the thresholds evaluate saved beside the model. ``workspace`` means the files as they are.

A paired comparison is only meaningful on the same images with the same labels: two different test
splits (another seed, another table) are refused with the reason, never compared.
"""

from __future__ import annotations

import io as bytes_io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexnet.core.errors import ChexnetError
from chexnet.pipeline import paths

PROBABILITY = "p_"


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on a split, where they came from, and its thresholds when known."""

    source: str
    frame: pd.DataFrame
    thresholds: dict[str, float] | None

    @property
    def findings(self) -> list[str]:
        return [c[len(PROBABILITY) :] for c in self.frame.columns if c.startswith(PROBABILITY)]


def _thresholds_of(document: dict[str, Any], where: str) -> dict[str, float]:
    values = document.get("thresholds") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ChexnetError(
            f"{where} has no 'thresholds' mapping: is it the evaluate stage's thresholds.json?"
        )
    return {str(k): float(v) for k, v in values.items()}


def _at_revision(revision: str, split: str) -> Predictions:
    """The evaluate stage's predictions and thresholds as ``revision`` recorded them (from the DVC cache)."""
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import resolve_rev

    predictions = (paths.PREDICTIONS_DIR / f"{split}.parquet").as_posix()
    try:
        with Repo(".") as repo:
            commit = resolve_rev(repo.scm, revision)
        table = dvc.api.read(predictions, rev=commit, mode="rb")
        thresholds = json.loads(dvc.api.read(paths.THRESHOLDS_FILE.as_posix(), rev=commit))
    except (DvcException, OSError, ValueError) as error:
        raise ChexnetError(
            f"{revision}: not a predictions file, and its {predictions} could not be read as a Git revision "
            f"or dvc experiment ({type(error).__name__}: {' '.join(str(error).split())[:200]}); run "
            "`dvc exp show` for the names, or `dvc pull` if its outputs are not in this cache"
        ) from error
    source = f"{revision} ({commit[:7]})"
    return Predictions(source, pd.read_parquet(bytes_io.BytesIO(table)), _thresholds_of(thresholds, source))


def read_predictions(spec: str, split: str = "test", thresholds: Path | None = None) -> Predictions:
    """``spec``: a predictions file, ``workspace``, or a revision (see the module docstring)."""
    from chexnet.core import io

    if spec == "workspace":
        spec = str(paths.PREDICTIONS_DIR / f"{split}.parquet")
        thresholds = thresholds or paths.THRESHOLDS_FILE
    path = Path(spec)
    if path.is_file():
        document = io.read_json(thresholds) if thresholds else None
        chosen = _thresholds_of(document, str(thresholds)) if document is not None else None
        return Predictions(str(path), pd.read_parquet(path), chosen)
    predictions = _at_revision(spec, split)
    if thresholds:
        return Predictions(
            predictions.source, predictions.frame, _thresholds_of(io.read_json(thresholds), str(thresholds))
        )
    return predictions


@dataclass(frozen=True)
class Paired:
    """Both models' scores on the same images, in one order, on the findings both predict."""

    truth: np.ndarray
    scores_a: np.ndarray
    scores_b: np.ndarray
    patients: np.ndarray
    findings: list[str]
    not_compared: dict[str, list[str]]


def _examples(images: set[str]) -> str:
    return ", ".join(sorted(images)[:3]) + (" ..." if len(images) > 3 else "")


def pair(a: Predictions, b: Predictions) -> Paired:
    """A and B aligned image by image; refused unless both scored the same images with the same labels
    and patients (a paired comparison of two different test splits means nothing)."""
    for side in (a, b):
        missing = {"image", "patient"} - set(side.frame.columns)
        if missing:
            raise ChexnetError(
                f"{side.source} has no {sorted(missing)} column: is it data/predictions/<split>.parquet?"
            )
        if side.frame["image"].duplicated().any():
            raise ChexnetError(f"{side.source} lists an image twice: not one split's predictions")
    only_a = set(a.frame["image"]) - set(b.frame["image"])
    only_b = set(b.frame["image"]) - set(a.frame["image"])
    if only_a or only_b:
        raise ChexnetError(
            f"A ({a.source}) and B ({b.source}) were scored on different test images: {len(only_a)} only "
            f"in A ({_examples(only_a)}), {len(only_b)} only in B ({_examples(only_b)}). A paired comparison "
            "needs the same split: compare runs with the same data, split params and seed"
        )
    findings = [f for f in a.findings if f in b.findings]
    if not findings:
        raise ChexnetError(f"A predicts {a.findings} and B {b.findings}: no finding in common to compare")
    left = a.frame.set_index("image")
    right = b.frame.set_index("image").loc[left.index]
    if not (left["patient"].astype(str) == right["patient"].astype(str)).all():
        raise ChexnetError("A and B give the same image different patients: not the same split")
    for finding in findings:
        same = np.array_equal(left[finding].to_numpy(float), right[finding].to_numpy(float), equal_nan=True)
        if not same:
            raise ChexnetError(
                f"the labels of {finding} differ between A and B on the same images (another label policy "
                "or table): compare models judged against the same labels"
            )
    return Paired(
        truth=left[findings].to_numpy(float),
        scores_a=left[[f"{PROBABILITY}{f}" for f in findings]].to_numpy(float),
        scores_b=right[[f"{PROBABILITY}{f}" for f in findings]].to_numpy(float),
        patients=left["patient"].astype(str).to_numpy(),
        findings=findings,
        not_compared={
            "only_in_a": [f for f in a.findings if f not in findings],
            "only_in_b": [f for f in b.findings if f not in findings],
        },
    )
