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
import torch

from chexnet.config.evaluate import EvaluateParams, ExternalSet
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data import cache
from chexnet.data.dataset import CachedImages
from chexnet.data.prepare import PrepareReport, prepare_cache
from chexnet.data.presets import registry
from chexnet.engine import inference
from chexnet.evaluation import figures, report, subgroups
from chexnet.explain.boxes import read_boxes
from chexnet.explain.localisation import localisation
from chexnet.model.file import ModelInfo
from chexnet.model.network import Network, check_target_layer
from chexnet.pipeline import headlines

log = logging.getLogger("chexnet.external")

ALL_ROWS = 10**12  # an external set is used whole: no subset


def prepare_set(
    spec: ExternalSet, out_dir: Path, info: ModelInfo, *, seed: int, workers: int
) -> PrepareReport:
    """The set's cache under ``out_dir``, at the model's image size and resize rule."""
    columns = registry.resolve_columns(spec.preset, spec.image_column, spec.label_column, spec.patient_column)
    return prepare_cache(
        registry.read_source(spec.preset, spec.table, spec.metadata_table),
        table_path=spec.table, image_root=spec.images, out_dir=out_dir, columns=columns,
        image_size=info.image_size, subset=ALL_ROWS, seed=seed, workers=workers,
        max_rejected_fraction=spec.max_rejected_fraction, label_options=spec.label_options(),
        preset=spec.preset, views=spec.views, resize=info.input.resize, subgroups=dict(spec.subgroups),
    )  # fmt: skip


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
    model: Network,
    info: ModelInfo,
    prepared_dir: Path,
    thresholds_file: dict[str, Any],
    cfg: EvaluateParams,
    *,
    seed: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> ExternalResult:
    """The model on every image of the set's cache, scored on the shared findings."""
    labels, index = cache.load_labels(prepared_dir), cache.load_index(prepared_dir)
    model_names = list(info.labels.names)
    shared, not_in_set, not_in_model = shared_findings(model_names, list(labels.names))
    if not shared:
        raise ChexnetError(
            f"evaluate.external.{name}: no finding in common with the model. The set has "
            f"{list(labels.names)}, the model predicts {model_names}: map the set's names to the model's "
            f"with evaluate.external.{name}.aliases"
        )
    if list(thresholds_file.get("labels", [])) != model_names:
        raise ChexnetError(
            "models/thresholds.json is not this model's (its labels differ): rerun dvc repro evaluate"
        )
    dataset = CachedImages(prepared_dir, index["row"].to_numpy(), cache.label_matrix(index, shared))
    loader = inference.make_loader(dataset, batch_size=batch_size, shuffle=False, seed=seed,
                                   num_workers=num_workers, device=device)  # fmt: skip
    precision = inference.Precision.recorded(info.run_as, device)
    every, truth = inference.predict(model, loader, device, desc=name, tta=cfg.tta, precision=precision)
    scores = every[:, [model_names.index(n) for n in shared]]
    thresholds = {n: float(thresholds_file["thresholds"][n]) for n in shared}
    fallbacks = {n: r for n, r in thresholds_file.get("fallbacks", {}).items() if n in shared}
    groups = subgroups.attribute_groups(cache.load_groups(prepared_dir), index["row"], cfg.age_bands)
    patients = index["patient"].astype(str).to_numpy()
    # "No finding" is called from all the model's outputs, at the training data's validation cut
    cut = float(thresholds_file.get("no_finding", {}).get("cut", 1.0))
    all_cuts = np.array([float(thresholds_file["thresholds"][n]) for n in model_names])
    called = (subgroups.abnormality(every, all_cuts), cut)
    evaluation = report.evaluate_test(
        truth, scores, patients, shared, thresholds, fallbacks, cfg, seed, None, groups, no_finding=called
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
    spec: ExternalSet, result: ExternalResult, model: Network, info: ModelInfo, prepared_dir: Path, *,
    layer: str, fraction: float, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """The set's expert boxes of shared findings, scored as the explain stage scores the test split's:
    pointing game and IoBB > 0.5 on every image with a box, several readers as in docs/explanations.md;
    Grad-CAM++ on ``layer`` (``explain.target_layer``, ``auto``: the network's own)."""
    target_layer = check_target_layer(model, layer)
    names = list(info.labels.names)
    known = [*names, *cache.load_labels(prepared_dir).names, *spec.aliases]
    boxes = read_boxes(spec.bbox_table, known, spec.aliases, spec.bbox_layout, spec.bbox_columns)
    shared = set(result.summary["findings_scored"])
    kept = boxes[boxes["finding"].isin(shared)]
    precision = inference.Precision.recorded(info.run_as, device)
    scores = localisation(
        model.to(device, memory_format=precision.memory_format), cache.load_images(prepared_dir),
        result.predictions, kept, names, target_layer=target_layer, device=device, fraction=fraction,
        precision=precision, groups=cache.load_groups(prepared_dir),
    )  # fmt: skip
    left_out = sorted(set(boxes["finding"]) - shared)
    return {"box_table": spec.bbox_table, **scores, **({"findings_not_scored": left_out} if left_out else {})}


def write_results(name: str, result: ExternalResult, summary: dict[str, Any], where: dict[str, Path]) -> None:
    """The set's report and headline metrics, predictions, curves and subgroup figure
    (:func:`chexnet.pipeline.paths.external_dirs` says where), and one log line."""
    headlines.write("external", summary, report=where["report"], metrics=where["metrics"])
    io.write_parquet(where["data"] / "predictions.parquet", result.predictions)
    curves = {key: where[key] for key in ("roc", "pr", "calibration")}
    shared = summary["findings_scored"]
    figures.write_curves(result.truth, result.scores, shared, result.evaluation.calibration_bins, **curves)
    figures.subgroup_figure(where["subgroups"], summary.get("subgroups") or {})
    macro = summary["auroc"]["macro"].get("value")
    missing, unknown = summary["not_in_this_set"] or "none", summary["not_predicted_by_the_model"] or "none"
    log.info("%s: %d images, mean AUROC %s over %s; not in the set: %s; not in the model: %s",
             name, summary["images"], macro, shared, missing, unknown)  # fmt: skip
