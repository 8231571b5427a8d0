"""train stage: DenseNet121 with the seed's head, Adam + BCE; keeps the best epoch by validation AUROC.

One plain process with train.processes: 1; with more, it starts torchrun itself (distributed.launch),
and every process dies with its parent.
Writes models/chexnet_model.pth (+ .json), metrics/train.json, reports/train.json and dvclive/
(per-epoch curves); resumes from <train.checkpoint_dir>/train_checkpoint.pt after an interruption.
"""

import logging
from pathlib import Path

import pandas as pd

from chexnet.config.train import TrainParams
from chexnet.core import io
from chexnet.data import cache
from chexnet.data.dataset import split_dataset
from chexnet.engine import distributed, inference, resume, training
from chexnet.model.file import build_model, save_model
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record, run_stage

log = logging.getLogger("chexnet.train")
PREPARED = [paths.PREPARED_DIR / name for name in (cache.INDEX_FILE, cache.LABELS_FILE, cache.IMAGES_FILE)]


def main(params) -> None:
    device = inference.resolve_device(params.device)
    distributed.run(params.train.processes, __file__, device, lambda ctx: train(params, ctx))


def train(params, ctx: distributed.Context) -> None:
    training.seed_everything(params.seed)
    io.require(*PREPARED[1:], made_by="prepare")
    io.require(paths.SPLIT_FILE, made_by="split")
    split, labels = pd.read_parquet(paths.SPLIT_FILE), cache.load_labels(paths.PREPARED_DIR)
    image_size = cache.image_size(paths.PREPARED_DIR)
    with distributed.main_first(ctx):  # one download of the ImageNet weights into the hub cache
        model, pretrained = build_model(params.weights, labels)
    options = training.TrainOptions.from_params(params, pretrained)
    fingerprint = resume.run_fingerprint(options, params.weights, ctx.world_size, labels,
                                         [paths.SPLIT_FILE, *PREPARED])  # fmt: skip
    checkpoint = Path(params.train.checkpoint_dir) / paths.CHECKPOINT_NAME
    logger = training.EpochLogger(paths.DVCLIVE_DIR) if ctx.is_main else None
    if ctx.is_main:
        log.info(training.describe(options, ctx, pretrained, labels))
    train_set, val_set = (split_dataset(paths.PREPARED_DIR, split, name, labels) for name in ("train", "val"))
    result = training.fit(model, train_set, val_set, options, ctx, checkpoint=checkpoint,
                          run_fingerprint=fingerprint, on_epoch=logger)  # fmt: skip
    if not ctx.is_main:
        return
    logger.end()
    info = training.model_record(params, labels, image_size, pretrained, ctx.device)
    save_model(paths.MODEL_FILE, result.best_state, info)
    record("train", training.summary(result, pretrained, options, ctx))
    checkpoint.unlink(missing_ok=True)  # finished: the next run with other params starts fresh


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(TrainParams,))
