"""A model's operating points, read by one rule for every path that applies them.

``chexnet predict``, ``chexnet explain``, ``chexnet export``, ``chexnet serve`` and the external stage
all call a finding positive at a threshold. Where they read the thresholds by different rules, the same
model calls the same image differently on two paths (round three found ``serve`` filling a missing
finding with 0.5 and taking 7.0 as given, where ``predict`` refused both). So the rule lives here, below
all of them:

1. ``thresholds.json`` beside the model (the evaluate stage writes it there), or the file the user
   names: it must hold a probability in [0, 1] for exactly the model's findings, in the model's order,
   and, when it records the sha256 of the model it was chosen for (evaluate writes it), that sha256 must
   be the model file's. A file for another model, other findings, a missing finding or a value out of
   range is refused with the fix; a file the user named must exist.
2. Else the operating points the model's record carries (an imported model's, checked when the record
   is read: :func:`chexnet.model.file._thresholds_of`).
3. Else 0.5 for every finding, said in a warning and in the source every answer reports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelMismatchError
from chexnet.model.file import ModelInfo

log = logging.getLogger(__name__)
FILE_NAME = "thresholds.json"  # beside the model: models/thresholds.json for models/chexnet_model.pth
MODEL_SHA256 = "model_sha256"  # the key under which evaluate records the model it chose them for


class ThresholdsError(ChexnetError):
    """A thresholds file that is not this model's, or not a thresholds file at all."""


@dataclass(frozen=True)
class OperatingPoints:
    """The thresholds to apply, where they came from (said in every answer), and the whole validated
    ``thresholds.json`` when they came from one (its fallbacks and validation counts)."""

    values: dict[str, float]
    source: str
    kind: str  # validation | record | default
    document: dict[str, Any] | None = None


def beside(model_path: str | Path) -> Path:
    """Where evaluate writes the thresholds of ``model_path``: ``thresholds.json`` in its folder."""
    return Path(model_path).parent / FILE_NAME


def stamp(document: dict[str, Any], model_path: str | Path) -> dict[str, Any]:
    """``document`` with the sha256 of the model its thresholds were chosen for (evaluate writes this)."""
    return {**document, MODEL_SHA256: io.sha256_of(model_path)}


def _is_probability(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and 0.0 <= float(value) <= 1.0
    )


def read_file(
    path: str | Path, info: ModelInfo, model_path: str | Path, *, model_sha256: str | None = None
) -> dict[str, Any]:
    """``path`` validated for the model at ``model_path`` (rule 1 of the module docstring);
    ``model_sha256``: the model file's, when the caller has read it already."""
    path, labels = Path(path), list(info.labels.names)
    document = io.read_json(path)
    values = document.get("thresholds") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise ThresholdsError(f"{path} has no 'thresholds' mapping: is it the evaluate stage's output?")
    named = document.get("labels")
    if (named is not None and list(named) != labels) or set(values) != set(labels):
        missing, extra = sorted(set(labels) - set(values)), sorted(set(values) - set(labels))
        raise LabelMismatchError(
            f"thresholds {path} are for {named or sorted(values)} (missing {missing}, extra {extra}), but "
            f"the model {model_path} predicts {labels}; use the thresholds file evaluated with this model"
        )
    bad = {label: value for label, value in values.items() if not _is_probability(value)}
    if bad:
        raise ThresholdsError(
            f"thresholds {path}: {bad} are not probabilities in [0, 1]; the file is damaged or not "
            "evaluate's output: rerun the evaluate stage"
        )
    chosen_for = document.get(MODEL_SHA256)
    if chosen_for is None:
        log.warning(
            "%s names no model (written before thresholds recorded their model's sha256): it is "
            "used because its findings match %s; rerun evaluate to have it checked",
            path,
            model_path,
        )
    elif chosen_for != (model_sha256 := model_sha256 or io.sha256_of(model_path)):
        raise ThresholdsError(
            f"thresholds {path} were chosen for another model (sha256 {str(chosen_for)[:12]}…), not for "
            f"{model_path} ({model_sha256[:12]}…): rerun the evaluate stage for this model, or "
            "name its own file with --thresholds"
        )
    return {**document, "thresholds": {label: float(values[label]) for label in labels}}


def operating_points(
    model_path: str | Path,
    info: ModelInfo,
    named: str | Path | None = None,
    *,
    model_sha256: str | None = None,
) -> OperatingPoints:
    """The model's thresholds by the module's rule: ``named`` (must exist), else ``thresholds.json``
    beside the model, else the record's, else 0.5 (with a warning)."""
    model_path = Path(model_path)
    path = Path(named) if named is not None else beside(model_path)
    if path.is_file():
        document = read_file(path, info, model_path, model_sha256=model_sha256)
        return OperatingPoints(document["thresholds"], str(path), "validation", document)
    if named is not None:
        raise ThresholdsError(f"--thresholds {path} does not exist; check the path (or leave it out)")
    if info.thresholds is not None:
        source = f"the model's record ({info.thresholds['source']})"
        return OperatingPoints(dict(info.thresholds["values"]), source, "record")
    log.warning(
        "no thresholds file beside the model (%s; the evaluate stage writes it): findings are "
        "called at probability ≥ 0.5",
        path,
    )
    return OperatingPoints(
        dict.fromkeys(info.labels.names, 0.5), "default 0.5 (no thresholds file)", "default"
    )
