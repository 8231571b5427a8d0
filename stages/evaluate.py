"""evaluate stage: the test split measured like a clinical study.

Per-class AUROC and average precision with patient-level bootstrap intervals, thresholds chosen on the
validation split (saved for predict) and applied to test, the seed's report at 0.5 beside them,
calibration, confusion figures, ROC / PR / reliability curves, the picture grid and the model card.
"""

import logging

import pandas as pd

from chexnet import cache, classification, evaluation, figures, inference, io, model_card, paths
from chexnet.model import load_model, require_labels
from chexnet.stage_runner import record, run_stage

log = logging.getLogger("chexnet.evaluate")


def main(params) -> None:
    cfg, device = params.evaluate, inference.resolve_device(params.device)
    io.require(paths.SPLIT_FILE, made_by="split")
    io.require(paths.MODEL_FILE, made_by="train")
    split, labels = pd.read_parquet(paths.SPLIT_FILE), cache.load_labels(paths.PREPARED_DIR)
    model, info = load_model(paths.MODEL_FILE)
    require_labels(info, labels, paths.MODEL_FILE, "the prepared data (data/prepared/labels.json)")
    precision = inference.Precision.of(params.train.amp, params.train.channels_last, device)  # as trained
    names, model = list(labels.names), model.to(device)
    loading = {"batch_size": params.batch_size, "seed": params.seed, "num_workers": params.num_workers,
               "device": device, "tta": cfg.tta, "precision": precision}  # fmt: skip
    predicted = {
        name: inference.predict_split(model, paths.PREPARED_DIR, split, name, labels, **loading)
        for name in ("val", "test")
    }
    for name, (frame, _, _) in predicted.items():
        io.write_parquet(paths.PREDICTIONS_DIR / f"{name}.parquet", frame)

    _, val_scores, val_truth = predicted["val"]  # thresholds from validation only: test is not in scope
    thresholds, fallbacks = evaluation.choose_thresholds(val_truth, val_scores, names, cfg.threshold_method)
    chosen = evaluation.thresholds_record(names, cfg.threshold_method, thresholds, fallbacks)
    io.write_json(paths.THRESHOLDS_FILE, chosen)
    test, scores, truth = predicted["test"]
    patients = test["patient"].to_numpy()
    split_report = io.read_json(paths.report_file("split"))
    split_positives = {name: split_report[name]["positives"] for name in ("train", "val")}
    result = evaluation.evaluate_test(truth, scores, patients, names, thresholds, fallbacks, cfg, params.seed,
                                      split_positives)  # fmt: skip
    record("evaluate", result.summary)
    io.write_json(paths.REPORT_JSON, result.classification_reports)
    io.write_text(paths.REPORT_TEXT, result.report_text)
    print(result.report_text)

    # One long-format file per curve kind: `dvc plots` draws one line per finding, for any label list.
    roc, pr = classification.roc_points(truth, scores, names), classification.pr_points(truth, scores, names)
    io.write_csv(paths.ROC_CSV, figures.curves_frame(roc, ["fpr", "tpr", "threshold"]))
    io.write_csv(paths.PR_CSV, figures.curves_frame(pr, ["recall", "precision", "threshold"]))
    calibration = pd.DataFrame(result.calibration_bins, columns=["bin", "predicted", "observed", "count"])
    io.write_csv(paths.CALIBRATION_CSV, calibration)
    images = cache.load_images(paths.PREPARED_DIR)
    figures.evaluation_figures(result, test, truth, images, cfg.grid_images, confusion=paths.CONFUSION_PNG,
                               reliability=paths.RELIABILITY_PNG, grid=paths.PREDICTION_GRID)  # fmt: skip
    card = model_card.model_card_for(
        params, result.summary, labels, prepare_report=paths.report_file("prepare"),
        split_report=paths.report_file("split"), train_metrics=paths.metrics_file("train"),
        label_counts=paths.PREPARED_DIR / cache.LABELS_FILE, demo_dir=paths.DEMO_DIR,
    )  # fmt: skip
    io.write_text(paths.MODEL_CARD, card)
    macro = result.summary["auroc"]["macro"]
    log.info("test mean AUROC %s (95%% CI %s–%s)", macro["value"], macro["ci_low"], macro["ci_high"])


if __name__ == "__main__":
    run_stage(__doc__, main)
