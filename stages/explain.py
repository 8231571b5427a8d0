"""explain stage: Grad-CAM++ overlays of each finding's top-k test images, and how well heat maps
point at the expert boxes (pointing game, IoBB > 0.5) when a box table is given."""

import logging
from pathlib import Path

import pandas as pd

from chexnet.config import data, explain
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data import cache
from chexnet.engine import inference
from chexnet.explain.boxes import read_boxes
from chexnet.explain.localisation import OVERLAY_COLUMNS, localisation, top_k_overlays
from chexnet.model.file import load_model, require_labels
from chexnet.model.network import check_target_layer
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.explain")


def main(params) -> None:
    cfg, device = params.explain, inference.resolve_device(params.device)
    io.require(paths.PREDICTIONS_FILE, made_by="evaluate")
    model, info = load_model(paths.MODEL_FILE)
    layer = check_target_layer(model, cfg.target_layer)  # one that names nothing: one line, before any work
    predictions = pd.read_parquet(paths.PREDICTIONS_FILE)
    images, labels = cache.load_images(paths.PREPARED_DIR), cache.load_labels(paths.PREPARED_DIR)
    require_labels(info, labels, paths.MODEL_FILE, "the prepared data", paths.PREPARED_DIR)
    precision = inference.Precision.recorded(info.run_as, device)  # as trained: the model's record says
    model, names = model.to(device, memory_format=precision.memory_format), list(labels.names)
    explaining = {"target_layer": layer, "device": device, "precision": precision}
    rows = top_k_overlays(model, images, predictions, names, k=cfg.top_k, out_dir=paths.CAM_DIR, **explaining)
    io.write_csv(paths.EXPLAIN_TABLE, pd.DataFrame(rows, columns=list(OVERLAY_COLUMNS)))
    findings = len({row["finding"] for row in rows})
    summary: dict = {"target_layer": layer, "top_k": cfg.top_k, "findings_explained": findings}
    box_table = Path(params.data.bbox_table) if params.data.bbox_table else None
    if box_table is not None and not box_table.is_file():
        raise ChexnetError(
            f"data.bbox_table {box_table} does not exist{paths.demo_hint(box_table, params.data)}; "
            "fix the path, or write inputs/none for no boxes"
        )
    if box_table is not None:
        boxes = read_boxes(
            box_table, names, params.data.aliases, params.data.bbox_layout, params.data.bbox_columns
        )
        scores = localisation(model, images, predictions, boxes, names, fraction=cfg.cam_threshold,
                              groups=cache.load_groups(paths.PREPARED_DIR), **explaining)  # fmt: skip
        summary["localisation"] = {"split": "test", "box_table": str(box_table), **scores}
        log.info("pointing game %(pointing_game)s, IoBB > 0.5 %(iobb_over_0.5)s over %(cases)d boxes", scores)
    else:
        log.info("no box table (data.bbox_table = %r): localisation not scored", params.data.bbox_table)
    record("explain", summary)
    log.info("wrote overlays for %d findings to %s", findings, paths.CAM_DIR)


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(explain.ExplainParams, data.DataParams))
