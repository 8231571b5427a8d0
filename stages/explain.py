"""explain stage: Grad-CAM++ overlay, per finding in the test split, of its most confident test image."""

import logging

import numpy as np
import pandas as pd

from chexnet import cam, figures, io, paths
from chexnet.cli import run_stage
from chexnet.data import IMAGES_FILE
from chexnet.labels import LABELS
from chexnet.model import CheXNet, load_checkpoint, resolve_device

log = logging.getLogger("chexnet.explain")


def main(params, _args) -> None:
    device = resolve_device(params.device)
    predictions = pd.read_parquet(paths.PREDICTIONS_FILE)
    images = np.load(paths.PREPARED_DIR / IMAGES_FILE, mmap_mode="r")
    model = load_checkpoint(CheXNet(), paths.MODEL_FILE).to(device)

    chosen = []
    for index, label in enumerate(LABELS):
        if predictions[label].sum() == 0:
            continue  # the finding is not present in the test split
        top = predictions.loc[predictions[f"p_{label}"].idxmax()]
        image = np.asarray(images[int(top["row"])])
        heat, probability = cam.grad_cam_pp(
            model, image, index, target_layer=params.explain.target_layer, device=device
        )
        truth = "positive" if top[label] else "negative"
        title = f"{label}: p={probability:.3f}, ground truth {truth} — {top['image']}"
        figures.cam_figure(paths.CAM_DIR / f"{label}.png", image, cam.overlay(image, heat), title)
        chosen.append(
            {
                "finding": label,
                "image": top["image"],
                "probability": probability,
                "ground_truth": bool(top[label]),
                "overlay": str(paths.CAM_DIR / f"{label}.png"),
            }
        )
    io.write_csv(
        paths.EXPLAIN_TABLE,
        pd.DataFrame(chosen, columns=["finding", "image", "probability", "ground_truth", "overlay"]),
    )
    io.write_json(
        paths.EXPLAIN_METRICS,
        {
            "findings_explained": len(chosen),
            "top_probability": {row["finding"]: round(row["probability"], 6) for row in chosen},
        },
    )
    log.info("wrote %d Grad-CAM++ overlays to %s", len(chosen), paths.CAM_DIR)


if __name__ == "__main__":
    run_stage(__doc__, main)
