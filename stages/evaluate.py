"""evaluate stage: the test split measured like a clinical study. Per-class AUROC and AP with patient
bootstrap intervals, validation-chosen thresholds (saved for predict) applied to test, the seed's report at
0.5, calibration, subgroups, ROC / PR / reliability curves and figures (the card stage writes the card)."""

import logging

import pandas as pd

from chexnet.config import data, evaluate
from chexnet.core import io
from chexnet.data import cache
from chexnet.engine import inference
from chexnet.engine.opened import LoadedModel
from chexnet.evaluation import curves, figures, subgroups
from chexnet.evaluation import report as evaluation
from chexnet.model import thresholds as operating
from chexnet.model.file import require_labels
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.evaluate")


def main(params) -> None:
    cfg = params.evaluate
    io.require(paths.SPLIT_FILE, made_by="split")
    io.require(paths.MODEL_FILE, made_by="train")
    split, labels = pd.read_parquet(paths.SPLIT_FILE), cache.load_labels(paths.PREPARED_DIR)
    loaded = LoadedModel.open(paths.MODEL_FILE, device=params.device, with_thresholds=False)  # chooses them
    require_labels(loaded.info, labels, paths.MODEL_FILE, "the prepared data", paths.PREPARED_DIR)
    predicted = {}
    for name in ("val", "test"):  # data/predictions/{val,test}.parquet
        predicted[name] = inference.predict_split(
            loaded.network,
            paths.PREPARED_DIR,
            split,
            name,
            labels,
            batch_size=params.batch_size,
            seed=params.seed,
            num_workers=params.num_workers,
            device=loaded.device,
            tta=cfg.tta,
            precision=loaded.precision,
        )
        io.write_parquet(paths.PREDICTIONS_DIR / f"{name}.parquet", predicted[name][0])
    _, val_scores, val_truth = predicted["val"]  # thresholds from validation only: test is not in scope
    names = list(labels.names)
    chosen = evaluation.validation_operating_points(val_truth, val_scores, names, cfg.threshold_method)
    io.write_json(paths.THRESHOLDS_FILE, operating.stamp(chosen, paths.MODEL_FILE))  # + the model's sha256
    test, scores, truth = predicted["test"]
    split_report = io.read_json(paths.report_file("split"))  # positives per finding of train and val
    split_positives = {k: v["positives"] for k, v in split_report.items() if k in ("train", "val")}
    groups = subgroups.attribute_groups(cache.load_groups(paths.PREPARED_DIR), test["row"], cfg.age_bands)
    result = evaluation.evaluate_test(
        truth,
        scores,
        test["patient"].to_numpy(),
        names,
        thresholds=chosen["thresholds"],
        fallbacks=chosen["fallbacks"],
        cfg=cfg,
        seed=params.seed,
        split_positives=split_positives,
        groups=groups,
        few_validation_images=chosen["validation"]["few_images"],
    )
    record("evaluate", result.summary)
    io.write_json(paths.REPORT_JSON, result.classification_reports)
    io.write_text(paths.REPORT_TEXT, result.report_text)
    print(result.report_text)  # the seed prints its classification_report
    curve_files = {"roc": paths.ROC_CSV, "pr": paths.PR_CSV, "calibration": paths.CALIBRATION_CSV}
    curves.write_curves(truth, scores, names, result.calibration_bins, **curve_files)
    images = cache.load_images(paths.PREPARED_DIR)
    figures.evaluation_figures(result, test, truth, images, cfg.grid_images, **paths.EVALUATE_FIGURES)
    log.info("test mean AUROC %(value)s (95%% CI %(ci_low)s–%(ci_high)s)", result.summary["auroc"]["macro"])


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(evaluate.EvaluateParams, data.DataParams))
