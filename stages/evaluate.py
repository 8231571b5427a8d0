"""evaluate stage: test-split AUROC per class, classification report, micro confusion, ROC curves, grid."""

import logging

import numpy as np
import pandas as pd

from chexnet import figures, io, metrics, paths, training
from chexnet.cli import run_stage
from chexnet.dataset import split_dataset
from chexnet.labels import LABELS
from chexnet.model import CheXNet, load_checkpoint, resolve_device

log = logging.getLogger("chexnet.evaluate")


def main(params, _args) -> None:
    device = resolve_device(params.device)
    split = pd.read_parquet(paths.SPLIT_FILE)
    test = split[split["split"] == "test"].reset_index(drop=True)
    dataset = split_dataset(paths.PREPARED_DIR, split, "test")
    loader = training.make_loader(
        dataset,
        batch_size=params.batch_size,
        shuffle=False,
        seed=params.seed,
        num_workers=params.num_workers,
        device=device,
    )
    model = load_checkpoint(CheXNet(), paths.MODEL_FILE).to(device)
    scores, truth = training.predict(model, loader, device, desc="test")

    threshold = params.evaluate.threshold
    summary = metrics.evaluate_scores(truth, scores, threshold)
    summary["split"] = "test"
    io.write_json(paths.EVALUATE_METRICS, summary)
    report_dict, report_text = metrics.report(truth, (scores >= threshold).astype(np.uint8))
    io.write_json(paths.REPORT_JSON, report_dict)
    io.write_text(paths.REPORT_TEXT, f"test split, threshold {threshold:g}\n\n{report_text}")
    print(report_text)

    predictions = test[["row", "image", "patient", *LABELS]].copy()
    for j, label in enumerate(LABELS):
        predictions[f"p_{label}"] = scores[:, j]
    io.write_parquet(paths.PREDICTIONS_FILE, predictions)

    curves = metrics.roc_points(truth, scores)
    for label in LABELS:  # an undefined class gets a header-only file: no curve, and no missing-file error
        curve = curves.get(label, {"fpr": [], "tpr": [], "threshold": []})
        io.write_csv(paths.ROC_DIR / f"{label}.csv", pd.DataFrame(curve))

    shown = min(params.evaluate.grid_images, len(test))
    images = np.load(paths.PREPARED_DIR / "images.npy", mmap_mode="r")
    figures.prediction_grid(
        paths.PREDICTION_GRID,
        np.stack([images[r] for r in test["row"][:shown]]),
        truth[:shown],
        scores[:shown],
        list(test["image"][:shown]),
        threshold,
    )
    mean = summary["mean_auroc"]
    log.info("test mean AUROC: %s over %d images", "n/a" if mean is None else f"{mean:.4f}", len(test))


if __name__ == "__main__":
    run_stage(__doc__, main)
