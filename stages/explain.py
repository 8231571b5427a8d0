"""explain stage: Grad-CAM++ overlays of each finding's top-k test images, and how well heat maps
point at the expert boxes (pointing game, IoBB > 0.5) when a box table is given."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet import data, headlines, io, paths
from chexnet.boxes import read_boxes
from chexnet.cli import run_stage
from chexnet.explain import localisation, top_k_overlays
from chexnet.model import load_model, require_labels, resolve_device

log = logging.getLogger("chexnet.explain")


def main(params, _args) -> None:
    cfg = params.explain
    device = resolve_device(params.device)
    io.require(paths.PREDICTIONS_FILE, made_by="evaluate")
    predictions = pd.read_parquet(paths.PREDICTIONS_FILE)
    images = np.load(paths.PREPARED_DIR / data.IMAGES_FILE, mmap_mode="r")
    labels = data.load_labels(paths.PREPARED_DIR)
    model, info = load_model(paths.MODEL_FILE)
    require_labels(info, labels, paths.MODEL_FILE, "the prepared data (data/prepared/labels.json)")
    model = model.to(device)
    names = list(labels.names)

    rows = top_k_overlays(
        model,
        images,
        predictions,
        names,
        k=cfg.top_k,
        target_layer=cfg.target_layer,
        device=device,
        out_dir=paths.CAM_DIR,
    )
    io.write_csv(
        paths.EXPLAIN_TABLE,
        pd.DataFrame(rows, columns=["finding", "rank", "image", "probability", "ground_truth", "overlay"]),
    )
    summary: dict[str, object] = {
        "target_layer": cfg.target_layer,
        "top_k": cfg.top_k,
        "findings_explained": len({row["finding"] for row in rows}),
    }
    box_table = Path(params.data.bbox_table) if params.data.bbox_table else None
    if box_table is not None and box_table.is_file():
        scores = localisation(
            model,
            images,
            predictions,
            read_boxes(box_table, names, params.data.aliases),
            names,
            target_layer=cfg.target_layer,
            device=device,
            fraction=cfg.cam_threshold,
        )
        summary["localisation"] = {"split": "test", "box_table": str(box_table), **scores}
        log.info(
            "pointing game %s, IoBB > 0.5 %s over %d (image, finding) boxes",
            scores["pointing_game"],
            scores["iobb_over_0.5"],
            scores["cases"],
        )
    else:
        log.info("no box table (data.bbox_table = %r): localisation not scored", params.data.bbox_table)
    headlines.write("explain", summary)
    log.info("wrote overlays for %d findings to %s", summary["findings_explained"], paths.CAM_DIR)


if __name__ == "__main__":
    run_stage(__doc__, main)
