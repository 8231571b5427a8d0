"""prepare stage: choose the label list, binarise, take the seeded subset, decode each image once into
data/prepared/."""

import logging

from chexnet.config.data import DataParams
from chexnet.data import prepare
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.prepare")


def main(params) -> None:
    cfg = params.data
    report = prepare.prepare_source(
        cfg,
        out_dir=paths.PREPARED_DIR,
        image_size=params.image_size,
        resize=cfg.resize,
        label_options=cfg.label_options(params.labels),
        subset=params.subset,
        seed=params.seed,
        workers=cfg.workers,
    )
    record("prepare", report.as_dict())
    log.info(
        "prepared %d of %d selected images, %d findings (%s): %s; rejected: %s",
        report.images_written,
        report.rows_selected,
        len(report.labels),
        report.labels.source,
        ", ".join(report.labels.names),
        report.rejected or "none",
    )


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(DataParams,))
