"""External test sets (``evaluate.external``): does the model hold up on other data?

Each set is another table and image folder, read by its own preset and label options, prepared with
**the model's** image pipeline (its recorded image size and resize rule, so its probabilities mean what
they meant on the test split), and scored on the findings it shares with the model, by name after the
set's ``aliases``. The rest are listed, never guessed: the set's findings the model does not predict,
and the model's findings the set does not label. The thresholds are the training data's validation
thresholds (``models/thresholds.json``): an external set is never used to tune anything, only to
measure. Intervals are the same patient bootstrap as the test split's, and so are the subgroups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexnet.config.evaluate import EvaluateParams, ExternalSet
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data import cache
from chexnet.data.dataset import CachedImages
from chexnet.data.prepare import PrepareReport, prepare_source
from chexnet.engine import inference
from chexnet.engine.opened import LoadedModel
from chexnet.evaluation import curves, figures, report, subgroups
from chexnet.explain.boxes import read_boxes
from chexnet.explain.localisation import localisation
from chexnet.model.file import ModelInfo
from chexnet.pipeline import headlines

log = logging.getLogger("chexnet.external")

ALL_ROWS = 10**12  # an external set is used whole: no subset


def prepare_set(
    spec: ExternalSet, out_dir: Path, info: ModelInfo, *, seed: int, workers: int
) -> PrepareReport:
    """The set's cache under ``out_dir``, whole (no subset), at the model's image size and resize rule,
    read by the same code as ``data:`` (:func:`chexnet.data.prepare.prepare_source`)."""
    return prepare_source(
        spec,
        out_dir=out_dir,
        image_size=info.image_size,
        resize=info.input.resize,
        label_options=spec.label_options(),
        subset=ALL_ROWS,
        seed=seed,
        workers=workers,
    )


def shared_findings(model_names: list[str], set_names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The findings both have (in the model's order), the model's the set lacks, the set's the model lacks."""
    shared = [name for name in model_names if name in set_names]
    return (
        shared,
        [n for n in model_names if n not in set_names],
        [n for n in set_names if n not in model_names],
    )


@dataclass
class ExternalResult:
    evaluation: report.TestEvaluation
    summary: dict[str, Any]  # reports/external/<name>.json
    predictions: pd.DataFrame  # data/external/<name>/predictions.parquet
    truth: np.ndarray
    scores: np.ndarray


# long: the set's whole measurement in the order it happens (predict, pick the shared outputs, score,
# subgroups), each step one call; split up, the pieces would pass the same six arrays around.
def score_set(
    name: str,
    loaded: LoadedModel,
    prepared_dir: Path,
    cfg: EvaluateParams,
    *,
    seed: int,
    batch_size: int,
    num_workers: int,
) -> ExternalResult:
    """The model on every image of the set's cache, scored on the shared findings at the thresholds it
    was opened with (the training data's validation thresholds, ``models/thresholds.json``)."""
    if loaded.operating_points is None or loaded.operating_points.document is None:
        raise ChexnetError(
            "an external set is scored at the evaluate stage's thresholds: open the model with them"
        )
    thresholds_file, device = loaded.operating_points.document, loaded.device
    labels, index = cache.load_labels(prepared_dir), cache.load_index(prepared_dir)
    model_names = loaded.labels
    shared, not_in_set, not_in_model = shared_findings(model_names, list(labels.names))
    if not shared:
        raise ChexnetError(
            f"evaluate.external.{name}: no finding in common with the model. The set has "
            f"{list(labels.names)}, the model predicts {model_names}: map the set's names to the model's "
            f"with evaluate.external.{name}.aliases"
        )
    dataset = CachedImages(prepared_dir, index["row"].to_numpy(), cache.label_matrix(index, shared))
    loader = inference.make_loader(dataset, batch_size=batch_size, shuffle=False, seed=seed,
                                   num_workers=num_workers, device=device)  # fmt: skip
    every, truth = inference.predict(
        loaded.network, loader, device, desc=name, tta=cfg.tta, precision=loaded.precision
    )
    scores = every[:, [model_names.index(n) for n in shared]]
    thresholds = {n: float(thresholds_file["thresholds"][n]) for n in shared}
    fallbacks = {n: r for n, r in thresholds_file.get("fallbacks", {}).items() if n in shared}
    groups = subgroups.attribute_groups(cache.load_groups(prepared_dir), index["row"], cfg.age_bands)
    patients = index["patient"].astype(str).to_numpy()
    # "No finding" is called from all the model's outputs, as predict calls it: none clears its threshold
    all_cuts = np.array([float(thresholds_file["thresholds"][n]) for n in model_names])
    normal = subgroups.called_no_finding(every, all_cuts)
    evaluation = report.evaluate_test(
        truth, scores, patients, shared, thresholds, fallbacks, cfg, seed, None, groups, normal=normal
    )
    summary = evaluation.summary | {
        "split": f"external:{name}",
        "set": name,
        "thresholds": {**evaluation.summary["thresholds"], "chosen_on": "val (the training data's)"},
        "findings_scored": shared,
        "not_in_this_set": not_in_set,
        "not_predicted_by_the_model": not_in_model,
    }
    frame = index[["row", "image", "patient", "width", "height"]].copy()
    for j, finding in enumerate(shared):
        frame[finding], frame[f"p_{finding}"] = truth[:, j], scores[:, j]
    return ExternalResult(evaluation, summary, frame, truth, scores)


def localise_set(
    spec: ExternalSet, result: ExternalResult, loaded: LoadedModel, prepared_dir: Path, *, fraction: float
) -> dict[str, Any]:
    """The set's expert boxes of shared findings, scored as the explain stage scores the test split's:
    pointing game and IoBB > 0.5 on every image with a box, several readers as in docs/explanations.md;
    Grad-CAM++ on the layer the model was opened with (``explain.target_layer``)."""
    names = loaded.labels
    known = [*names, *cache.load_labels(prepared_dir).names, *spec.aliases]
    boxes = read_boxes(spec.bbox_table, known, spec.aliases, spec.bbox_layout, spec.bbox_columns)
    shared = set(result.summary["findings_scored"])
    kept = boxes[boxes["finding"].isin(shared)]
    scores = localisation(
        loaded.network,
        cache.load_images(prepared_dir),
        result.predictions,
        kept,
        names,
        target_layer=loaded.layer,
        device=loaded.device,
        fraction=fraction,
        precision=loaded.precision,
        groups=cache.load_groups(prepared_dir),
    )
    left_out = sorted(set(boxes["finding"]) - shared)
    return {"box_table": spec.bbox_table, **scores, **({"findings_not_scored": left_out} if left_out else {})}


def write_results(name: str, result: ExternalResult, summary: dict[str, Any], where: dict[str, Path]) -> None:
    """The set's report and headline metrics, predictions, curves and subgroup figure
    (:func:`chexnet.pipeline.paths.external_dirs` says where), and one log line."""
    headlines.write("external", summary, report=where["report"], metrics=where["metrics"])
    io.write_parquet(where["data"] / "predictions.parquet", result.predictions)
    curve_files = {key: where[key] for key in ("roc", "pr", "calibration")}
    shared = summary["findings_scored"]
    bins = result.evaluation.calibration_bins
    curves.write_curves(result.truth, result.scores, shared, bins, **curve_files)
    figures.subgroup_figure(where["subgroups"], summary.get("subgroups") or {})
    macro = summary["auroc"]["macro"].get("value")
    missing, unknown = summary["not_in_this_set"] or "none", summary["not_predicted_by_the_model"] or "none"
    log.info("%s: %d images, mean AUROC %s over %s; not in the set: %s; not in the model: %s",
             name, summary["images"], macro, shared, missing, unknown)  # fmt: skip
