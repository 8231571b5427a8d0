"""Which Grad-CAM++ layer localises better on the demo set, and the floor of an untrained model.

Run after `dvc repro` (it reads the test predictions, the prepared cache, the trained model and the demo
box table). Scores the pointing game and IoBB > 0.5 for the seed's layer ``features[-1]`` (the last
BatchNorm, before torchvision's final ReLU) and ``final_relu`` (after it), with the trained model and
with an untrained one (random initialisation, the floor), and the ceiling: the best pointing game
any 7 × 7 map (DenseNet121's last feature map at 224 px) could reach on these boxes.

    python -m benchmarks.explain_layers
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from chexnet.config.params import load_params
from chexnet.data import cache
from chexnet.data.cache import IMAGES_FILE
from chexnet.explain.boxes import pointing_hit, read_boxes
from chexnet.explain.localisation import box_cases, localisation
from chexnet.model.file import load_model
from chexnet.model.network import CheXNet
from chexnet.pipeline import paths


def grid_ceiling(
    predictions: pd.DataFrame, box_table: pd.DataFrame, size: int, labels: list[str], grid: int = 7
) -> float:
    """The best pointing game any ``grid × grid`` map could reach: the share of (image, finding) cases
    where some cell, alone and upsampled to ``size`` as the heat maps are, peaks inside a box."""
    peaks = []
    for i in range(grid):
        for j in range(grid):
            cell = torch.zeros(1, 1, grid, grid)
            cell[0, 0, i, j] = 1
            up = F.interpolate(cell, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
            peaks.append(up.numpy())
    cases = box_cases(predictions, box_table, size, labels)
    hits = [any(pointing_hit(peak, scaled) for peak in peaks) for *_, scaled in cases]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", nargs="+", default=["features[-1]", "final_relu"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    params = load_params()
    predictions = pd.read_parquet(paths.PREDICTIONS_FILE)
    images = np.load(paths.PREPARED_DIR / IMAGES_FILE, mmap_mode="r")
    labels = list(cache.load_labels(paths.PREPARED_DIR).names)
    box_table = read_boxes(params.data.bbox_table, labels, params.data.aliases)
    torch.manual_seed(params.seed)
    models = {"untrained": CheXNet(len(labels)), "trained": load_model(paths.MODEL_FILE)[0]}
    figures = {}
    for name, model in models.items():
        for layer in args.layers:
            scores = localisation(
                model,
                images,
                predictions,
                box_table,
                labels,
                target_layer=layer,
                device=torch.device("cpu"),
                fraction=params.explain.cam_threshold,
            )
            figures[f"{name} {layer}"] = {k: scores[k] for k in ("cases", "pointing_game", "iobb_over_0.5")}
            print(
                f"{name:>9} {layer:>12}: pointing game {scores['pointing_game']:.3f}, "
                f"IoBB>0.5 {scores['iobb_over_0.5']:.3f} over {scores['cases']} cases",
                flush=True,
            )
    figures["ceiling of any 7x7 map"] = grid_ceiling(predictions, box_table, images.shape[-1], labels)
    print(f"the best any 7 x 7 map could score: {figures['ceiling of any 7x7 map']:.3f}")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
