"""prepare stage: choose the label list, binarise, take the seeded subset, decode each image once into
data/prepared/."""

import logging

from chexnet.config.data import DataParams
from chexnet.data import prepare
from chexnet.data.presets import registry
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.prepare")


def main(params) -> None:
    cfg = params.data
    report = prepare.prepare_cache(
        registry.read_source(
            cfg.preset, cfg.table, cfg.metadata_table, cfg.demographics_table, cfg.patient_column
        ),
        table_path=cfg.table,
        image_root=cfg.images,
        out_dir=paths.PREPARED_DIR,
        columns=registry.resolve_columns(cfg.preset, cfg.image_column, cfg.label_column, cfg.patient_column),
        image_size=params.image_size,
        subset=params.subset,
        seed=params.seed,
        workers=cfg.workers,
        max_rejected_fraction=cfg.max_rejected_fraction,
        label_options=cfg.label_options(params.labels),
        preset=cfg.preset,
        views=cfg.views,
        resize=cfg.resize,
        subgroups=dict(cfg.subgroups),
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
