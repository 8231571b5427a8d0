"""explain stage: Grad-CAM++ overlays of each finding's top-k test images, and how well heat maps
point at the expert boxes (pointing game, IoBB > 0.5) when a box table is given."""

import logging
from pathlib import Path

import pandas as pd

from chexnet.config import data, explain
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data import cache
from chexnet.engine.opened import LoadedModel
from chexnet.explain.boxes import read_boxes
from chexnet.explain.localisation import OVERLAY_COLUMNS, localisation, top_k_overlays
from chexnet.model.file import require_labels
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.explain")


def main(params) -> None:
    cfg = params.explain
    io.require(paths.PREDICTIONS_FILE, made_by="evaluate")
    box_table = Path(params.data.bbox_table) if params.data.bbox_table else None
    if box_table is not None and not box_table.is_file():
        raise ChexnetError(
            f"data.bbox_table {box_table} does not exist{paths.demo_hint(box_table, params.data)}; "
            "fix the path, or write inputs/none for no boxes"
        )
    # a layer that names nothing or no spatial map is refused here, in one line, before any work
    loaded = LoadedModel.open(
        paths.MODEL_FILE, device=params.device, with_thresholds=False, layer=cfg.target_layer
    )
    images, labels = cache.load_images(paths.PREPARED_DIR), cache.load_labels(paths.PREPARED_DIR)
    require_labels(loaded.info, labels, paths.MODEL_FILE, "the prepared data", paths.PREPARED_DIR)
    predictions = pd.read_parquet(paths.PREDICTIONS_FILE)
    explaining = {"target_layer": loaded.layer, "device": loaded.device, "precision": loaded.precision}
    rows = top_k_overlays(
        loaded.network, images, predictions, loaded.labels, k=cfg.top_k, out_dir=paths.CAM_DIR, **explaining
    )
    io.write_csv(paths.EXPLAIN_TABLE, pd.DataFrame(rows, columns=list(OVERLAY_COLUMNS)))
    findings = len({row["finding"] for row in rows})
    summary: dict = {"target_layer": loaded.layer, "top_k": cfg.top_k, "findings_explained": findings}
    if box_table is not None:
        data_cfg = params.data
        boxes = read_boxes(
            box_table, loaded.labels, data_cfg.aliases, data_cfg.bbox_layout, data_cfg.bbox_columns
        )
        scores = localisation(
            loaded.network,
            images,
            predictions,
            boxes,
            loaded.labels,
            fraction=cfg.cam_threshold,
            groups=cache.load_groups(paths.PREPARED_DIR),
            **explaining,
        )
        summary["localisation"] = {"split": "test", "box_table": str(box_table), **scores}
        log.info("pointing game %(pointing_game)s, IoBB > 0.5 %(iobb_over_0.5)s over %(cases)d boxes", scores)
    else:
        log.info("no box table (data.bbox_table = %r): localisation not scored", params.data.bbox_table)
    record("explain", summary)
    log.info("wrote overlays for %d findings to %s", findings, paths.CAM_DIR)


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(explain.ExplainParams, data.DataParams))
