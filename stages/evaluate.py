"""evaluate stage: the test split measured like a clinical study.

Per-class AUROC and average precision with patient-level bootstrap intervals, thresholds chosen on the
validation split (saved for predict) and applied to test, the seed's report at 0.5 beside them,
calibration, confusion figures, ROC / PR / reliability curves, the picture grid and the model card.
"""

import logging

import numpy as np
import pandas as pd

from chexnet import bootstrap, data, evaluation, figures, headlines, io, metrics, paths, report, training
from chexnet.cli import run_stage
from chexnet.dataset import split_dataset
from chexnet.model import load_model, require_labels, resolve_device
from chexnet.params import DataParams, params_to_dict

log = logging.getLogger("chexnet.evaluate")


def main(params, _args) -> None:
    cfg = params.evaluate
    device = resolve_device(params.device)
    io.require(paths.SPLIT_FILE, made_by="split")
    io.require(paths.MODEL_FILE, made_by="train")
    split = pd.read_parquet(paths.SPLIT_FILE)
    labels = data.load_labels(paths.PREPARED_DIR)
    model, info = load_model(paths.MODEL_FILE)
    require_labels(info, labels, paths.MODEL_FILE, "the prepared data (data/prepared/labels.json)")
    model = model.to(device)
    names = list(labels.names)
    predictions, probabilities = {}, {}
    for name in ("val", "test"):
        loader = training.make_loader(
            split_dataset(paths.PREPARED_DIR, split, name, labels),
            batch_size=params.batch_size,
            shuffle=False,
            seed=params.seed,
            num_workers=params.num_workers,
            device=device,
        )
        probabilities[name] = training.predict(model, loader, device, desc=name, tta=cfg.tta)
        columns = ["row", "image", "patient", "width", "height", *names]
        frame = split[split["split"] == name][columns].reset_index(drop=True)
        for j, label in enumerate(names):
            frame[f"p_{label}"] = probabilities[name][0][:, j]
        predictions[name] = frame
        io.write_parquet(paths.PREDICTIONS_DIR / f"{name}.parquet", frame)

    # Thresholds from validation only: the test labels are not in scope here.
    val_scores, val_truth = probabilities["val"]
    thresholds, fallbacks = evaluation.choose_thresholds(val_truth, val_scores, names, cfg.threshold_method)
    io.write_json(
        paths.THRESHOLDS_FILE,
        {
            "labels": names,
            "method": cfg.threshold_method,
            "chosen_on": "val",
            "thresholds": thresholds,
            "fallbacks": fallbacks,
        },
    )

    scores, truth = probabilities["test"]
    test = predictions["test"]
    intervals = bootstrap.bootstrap_metrics(
        truth,
        scores,
        test["patient"].to_numpy(),
        names,
        resamples=cfg.bootstrap_resamples,
        seed=params.seed,
        level=cfg.ci_level,
    )
    at_chosen = evaluation.binarize_at(scores, thresholds, names)
    at_seed = (scores >= cfg.threshold).astype(np.uint8)
    points = evaluation.operating_points(truth, scores, thresholds, names)
    ece, overall_bins = evaluation.reliability(truth, scores, cfg.calibration_bins)
    per_class_bins = {
        label: evaluation.reliability(truth[:, j], scores[:, j], cfg.calibration_bins)
        for j, label in enumerate(names)
    }
    chosen_report, chosen_text = metrics.report(truth, at_chosen, names)
    seed_report, seed_text = metrics.report(truth, at_seed, names)

    summary = {
        "split": "test",
        "findings": len(names),
        "images": len(test),
        "patients": int(test["patient"].nunique()),
        "bootstrap": {
            "resamples": cfg.bootstrap_resamples,
            "unit": "patient",
            "seed": params.seed,
            "level": cfg.ci_level,
        },
        "auroc": {key: value.as_dict() for key, value in intervals["auroc"].items()},
        "average_precision": {key: value.as_dict() for key, value in intervals["average_precision"].items()},
        "thresholds": {"method": cfg.threshold_method, "chosen_on": "val", "fallbacks": fallbacks},
        "at_thresholds": {
            "micro_confusion": metrics.micro_confusion(truth, at_chosen),
            "micro_f1": chosen_report["micro avg"]["f1-score"],
            "macro_f1": chosen_report["macro avg"]["f1-score"],
            "per_class": points,
        },
        "at_0.5": {
            "threshold": cfg.threshold,
            "micro_confusion": metrics.micro_confusion(truth, at_seed),
            "micro_f1": seed_report["micro avg"]["f1-score"],
            "macro_f1": seed_report["macro avg"]["f1-score"],
        },
        "calibration": {
            "ece": ece,
            "bins": cfg.calibration_bins,
            "ece_per_class": {label: v[0] for label, v in per_class_bins.items()},
        },
        "tta": cfg.tta,
    }
    headlines.write("evaluate", summary)
    io.write_json(paths.REPORT_JSON, {"validation_thresholds": chosen_report, "threshold_0.5": seed_report})
    io.write_text(
        paths.REPORT_TEXT,
        f"test split, thresholds chosen on validation ({cfg.threshold_method})\n\n{chosen_text}\n\n"
        f"test split, threshold {cfg.threshold:g} (the seed's)\n\n{seed_text}",
    )
    print(chosen_text)

    # One long-format file per curve kind: `dvc plots` draws one line per finding, for any label list.
    io.write_csv(
        paths.ROC_CSV,
        figures.curves_frame(metrics.roc_points(truth, scores, names), ["fpr", "tpr", "threshold"]),
    )
    io.write_csv(
        paths.PR_CSV,
        figures.curves_frame(metrics.pr_points(truth, scores, names), ["recall", "precision", "threshold"]),
    )
    io.write_csv(
        paths.CALIBRATION_CSV, pd.DataFrame(overall_bins, columns=["bin", "predicted", "observed", "count"])
    )
    figures.confusion_grid(paths.CONFUSION_PNG, points, "Test split at thresholds chosen on validation")
    figures.reliability_diagram(
        paths.RELIABILITY_PNG, overall_bins, {k: v[1] for k, v in per_class_bins.items()}, ece
    )

    shown = min(cfg.grid_images, len(test))
    images = np.load(paths.PREPARED_DIR / "images.npy", mmap_mode="r")
    figures.prediction_grid(
        paths.PREDICTION_GRID,
        np.stack([images[r] for r in test["row"][:shown]]),
        truth[:shown],
        at_chosen[:shown],
        names,
        list(test["image"][:shown]),
        f"thresholds chosen on validation ({cfg.threshold_method})",
    )

    io.write_text(
        paths.MODEL_CARD,
        report.model_card(
            evaluation=summary,
            prepare=headlines.read("prepare"),
            split=headlines.read("split"),
            train=headlines.read("train", headline=True),  # the report's timings would rerun evaluate
            params=params_to_dict(params),
            demo_data=params.data.table == DataParams().table,
            labels=labels,
            label_counts=io.read_json(paths.PREPARED_DIR / data.LABELS_FILE),
        ),
    )
    macro = intervals["auroc"]["macro"]
    log.info(
        "test mean AUROC %s (95%% CI %s–%s) over %d images of %d patients",
        macro.value,
        macro.ci_low,
        macro.ci_high,
        len(test),
        summary["patients"],
    )


if __name__ == "__main__":
    run_stage(__doc__, main)
