"""train stage: DenseNet121 (or `architecture`) with the seed's head, Adam + BCE, the best epoch by validation
AUROC kept; epochs: 0 takes `weights` as it is (evaluate-only). With train.processes > 1 it starts torchrun
itself. Writes models/, metrics/ and reports/train.json, dvclive/; resumes from train.checkpoint_dir."""

import logging
from pathlib import Path

import pandas as pd

from chexnet.config.train import TrainParams
from chexnet.core import io
from chexnet.data import cache
from chexnet.data.dataset import split_dataset
from chexnet.engine import distributed, inference, records, resume, training
from chexnet.model.file import save_model
from chexnet.model.initial import build_model
from chexnet.pipeline import evaluate_only, paths
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
    if params.epochs == 0:  # evaluate-only: the model in `weights` as it is
        return evaluate_only.write_given_model(params.weights, labels, image_size) if ctx.is_main else None
    with distributed.main_first(ctx):  # one download of the ImageNet weights into the hub cache
        model, pretrained = build_model(
            params.weights, labels, params.architecture, resize=cache.resize_rule(paths.PREPARED_DIR)
        )
    options = training.TrainOptions.from_params(params, pretrained)
    placement = training.Placement.of(options, ctx.device)  # the precision and layout, once for the run
    fingerprint = resume.run_fingerprint(
        options, params.weights, ctx.world_size, labels, [paths.SPLIT_FILE, *PREPARED]
    )
    checkpoint = Path(params.train.checkpoint_dir) / paths.CHECKPOINT_NAME
    logger = training.EpochLogger(paths.DVCLIVE_DIR) if ctx.is_main else None
    if ctx.is_main:
        log.info(training.describe(placement, ctx, pretrained, labels))
    sets = [split_dataset(paths.PREPARED_DIR, split, name, labels) for name in ("train", "val")]
    result = training.fit(
        model,
        *sets,
        options,
        ctx,
        checkpoint=checkpoint,
        run_fingerprint=fingerprint,
        on_epoch=logger,
        placement=placement,
    )
    if not ctx.is_main:
        return
    logger.end()
    info = records.model_record(
        params, labels, image_size, pretrained, ctx.device, model, precision=placement.precision
    )
    save_model(paths.MODEL_FILE, result.best_state, info)
    record("train", training.summary(result, pretrained, options, placement, ctx))
    checkpoint.unlink(missing_ok=True)  # finished: the next run with other params starts fresh


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(TrainParams,))
