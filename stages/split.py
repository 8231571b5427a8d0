"""split stage: patient-level train/val/test split of the prepared index, checked for leakage."""

import logging

from chexnet.config.split import SplitParams
from chexnet.core import io
from chexnet.data import cache, splits
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.split")


def main(params) -> None:
    io.require(
        paths.PREPARED_DIR / cache.INDEX_FILE, paths.PREPARED_DIR / cache.LABELS_FILE, made_by="prepare"
    )
    index = cache.load_index(paths.PREPARED_DIR)
    labels = cache.load_labels(paths.PREPARED_DIR)
    cfg = params.split
    if cfg.method == "official":
        index["split"] = splits.official_split(
            index,
            labels,
            test_list=cfg.test_list,
            train_val_list=cfg.train_val_list,
            val_fraction=cfg.val_fraction,
            seed=params.seed,
        )
    else:
        index["split"] = splits.patient_split(
            index, labels, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=params.seed
        )
    splits.check_no_patient_overlap(index)
    splits.check_usable(index, labels)
    io.write_parquet(paths.SPLIT_FILE, index)
    summary = splits.split_summary(index, labels)
    summary["method"] = cfg.method
    record("split", summary)
    log.info("split (%s): %s", cfg.method, {name: summary[name]["images"] for name in splits.SPLITS})


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(SplitParams,))
