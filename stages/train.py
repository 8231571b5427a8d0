"""train stage: DenseNet121 with the seed's head, Adam + BCE; keeps the best epoch by validation AUROC.

One plain process with train.processes: 1; with more, it starts torchrun itself (distributed.launch),
and every process dies with its parent.
Writes models/chexnet_model.pth (+ .json), metrics/train.json, reports/train.json and dvclive/
(per-epoch curves); resumes from <train.checkpoint_dir>/train_checkpoint.pt after an interruption.
"""

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexnet import data, distributed, headlines, io, paths, training
from chexnet.cli import run_stage
from chexnet.dataset import split_dataset
from chexnet.model import ModelInfo, build_model, save_model

log = logging.getLogger("chexnet.train")


def main(params, _args) -> None:
    if params.train.processes > 1 and not distributed.launched():
        sys.exit(distributed.launch(params.train.processes, __file__, sys.argv[1:]))
    ctx = distributed.setup(params.device)
    try:
        train(params, ctx)
    finally:
        distributed.teardown()


def train(params, ctx: distributed.Context) -> None:
    training.seed_everything(params.seed)
    io.require(
        paths.PREPARED_DIR / data.IMAGES_FILE, paths.PREPARED_DIR / data.LABELS_FILE, made_by="prepare"
    )
    io.require(paths.SPLIT_FILE, made_by="split")
    split = pd.read_parquet(paths.SPLIT_FILE)
    labels = data.load_labels(paths.PREPARED_DIR)
    cache_shape = np.load(paths.PREPARED_DIR / data.IMAGES_FILE, mmap_mode="r").shape
    # Rank 0 fetches the ImageNet weights into the hub cache first; the others then read that file
    # instead of all downloading at once (DDP copies rank 0's weights to every process anyway).
    if not ctx.is_main:
        distributed.barrier(ctx)
    model, pretrained = build_model(params.weights, labels)
    if ctx.is_main:
        distributed.barrier(ctx)
    cfg = params.train
    options = training.TrainOptions(
        epochs=params.epochs,
        batch_size=params.batch_size,
        lr=params.lr,
        seed=params.seed,
        num_workers=params.num_workers,
        amp=cfg.amp,
        channels_last=cfg.channels_last,
        memory_efficient=cfg.memory_efficient,
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
        hflip=cfg.hflip,
        pos_weight=cfg.pos_weight,
        early_stopping_patience=cfg.early_stopping_patience,
        lr_plateau_patience=cfg.lr_plateau_patience,
        lr_plateau_factor=cfg.lr_plateau_factor,
    )
    # What a checkpoint must match to be resumed (epochs left out: a killed run may be extended).
    settings = dataclasses.asdict(options) | {
        "weights": params.weights,
        "world_size": ctx.world_size,
        "labels": list(labels.names),
        "image_cache_shape": list(cache_shape),
    }
    settings.pop("epochs")
    fingerprint = training.fingerprint(
        settings,
        [
            paths.SPLIT_FILE,
            paths.PREPARED_DIR / data.INDEX_FILE,
            paths.PREPARED_DIR / data.LABELS_FILE,
            paths.PREPARED_DIR / data.IMAGES_FILE,
        ],  # the pixels too: another image size is another run
    )
    checkpoint = Path(cfg.checkpoint_dir) / paths.CHECKPOINT_NAME
    if ctx.is_main:
        log.info(
            "training on %s × %d process(es), %s weights, %s, channels_last %s, memory_efficient %s, "
            "%d findings (%s)",
            ctx.device,
            ctx.world_size,
            "ImageNet" if pretrained else "random",
            training.amp_dtype(options.amp, ctx.device) or "fp32",
            training.on_cpu_by_default(options.channels_last, ctx.device),
            training.on_cpu_by_default(options.memory_efficient, ctx.device),
            len(labels),
            labels.source,
        )

    live = None
    if ctx.is_main:
        from dvclive import Live

        # dvcyaml=False: dvc.yaml declares dvclive's files itself; no surprise edits to it.
        live = Live(dir=str(paths.DVCLIVE_DIR), dvcyaml=False, save_dvc_exp=False)

    def log_epoch(record: training.EpochRecord) -> None:
        live.log_metric("train/loss", record.train_loss)
        live.log_metric("val/loss", record.val_loss)
        if record.val_mean_auroc is not None:
            live.log_metric("val/mean_auroc", record.val_mean_auroc)
        live.log_metric("train/lr", record.lr)
        live.next_step()

    result = training.fit(
        model,
        split_dataset(paths.PREPARED_DIR, split, "train", labels),
        split_dataset(paths.PREPARED_DIR, split, "val", labels),
        options,
        ctx,
        checkpoint=checkpoint,
        run_fingerprint=fingerprint,
        on_epoch=log_epoch if live else None,
    )
    if not ctx.is_main:
        return
    live.end()
    save_model(paths.MODEL_FILE, result.best_state, ModelInfo(labels, image_size=int(cache_shape[-1])))
    history = result.history
    images_per_second = [r.images_per_second for r in history if r.epoch > result.resumed_from_epoch]
    headlines.write(
        "train",
        {
            "pretrained": pretrained,
            "train_device": f"{ctx.device.type} x{ctx.world_size}",
            "precision": str(training.amp_dtype(options.amp, ctx.device) or torch.float32)[len("torch.") :],
            "channels_last": training.on_cpu_by_default(options.channels_last, ctx.device),
            "memory_efficient": training.on_cpu_by_default(options.memory_efficient, ctx.device),
            "epochs_trained": len(history),
            "best_epoch": result.best_epoch,
            "best_val_mean_auroc": None
            if result.best_val_mean_auroc is None
            else round(result.best_val_mean_auroc, 6),
            "final_train_loss": round(history[-1].train_loss, 6),
            "final_val_loss": round(history[-1].val_loss, 6),
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "train_images_per_second": round(sum(images_per_second) / max(len(images_per_second), 1), 2),
            "epoch_seconds": [round(r.seconds, 1) for r in history],
        },
    )
    checkpoint.unlink(missing_ok=True)  # finished: the next run with other params starts fresh


if __name__ == "__main__":
    run_stage(__doc__, main)
