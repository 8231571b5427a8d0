"""train stage: DenseNet121 with the seed's head, Adam + BCE; writes the model and training metrics."""

import logging

import pandas as pd
import torch

from chexnet import io, paths, training
from chexnet.cli import run_stage
from chexnet.dataset import split_dataset
from chexnet.model import build_model, resolve_device

log = logging.getLogger("chexnet.train")


def main(params, _args) -> None:
    training.seed_everything(params.seed)
    device = resolve_device(params.device)
    split = pd.read_parquet(paths.SPLIT_FILE)

    def loader(name: str, shuffle: bool):
        dataset = split_dataset(paths.PREPARED_DIR, split, name)
        return training.make_loader(
            dataset,
            batch_size=params.batch_size,
            shuffle=shuffle,
            seed=params.seed,
            num_workers=params.num_workers,
            device=device,
        )

    model, pretrained = build_model(params.weights)
    log.info("training on %s, %s weights", device, "ImageNet" if pretrained else "random")
    history = training.train(
        model, loader("train", True), loader("val", False), epochs=params.epochs, lr=params.lr, device=device
    )

    io.write_with(paths.MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    rows = [vars(record) for record in history.epochs]
    io.write_csv(paths.TRAIN_HISTORY, pd.DataFrame(rows))
    last = history.epochs[-1]
    io.write_json(
        paths.TRAIN_METRICS,
        {
            "pretrained": pretrained,
            "train_device": str(device),
            "epochs_trained": len(history.epochs),
            "train_loss": round(last.train_loss, 6),
            "val_loss": round(last.val_loss, 6),
            "val_mean_auroc": None if last.val_mean_auroc is None else round(last.val_mean_auroc, 6),
            "train_images_per_second": round(history.images_seen / max(history.train_seconds, 1e-9), 2),
        },
    )


if __name__ == "__main__":
    run_stage(__doc__, main)
