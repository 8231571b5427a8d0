"""Evaluate-only runs (``epochs: 0``): the model in ``weights`` becomes the run's model as it is.

``dvc exp run -S weights=models/imported.pth -S epochs=0`` is external validation of someone else's
model on your data: no weight changes. Its outputs are narrowed, by name, to the data's findings (a
torchxrayvision model's 18 outputs judged on the 14 your table has); a finding of the data the model has
no output for is refused, never filled with an untrained row. Its architecture, input rule, precision
and imported operating points travel on in the record, with where it came from (the file's sha256).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from chexnet.core.errors import ChexnetError
from chexnet.core.io import sha256_of
from chexnet.core.labels import LabelList, LabelMismatchError
from chexnet.data import cache
from chexnet.model.file import ModelInfo, load_model


def narrowed_to(model: torch.nn.Module, info: ModelInfo, labels: LabelList) -> dict[str, torch.Tensor]:
    """The model's state_dict with its head rows picked, by name, in ``labels``' order."""
    rows = torch.as_tensor([info.labels.index(name) for name in labels.names], dtype=torch.long)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    for part in ("weight", "bias"):
        key = f"{model.HEAD}.0.{part}"
        state[key] = state[key].index_select(0, rows).contiguous()
    return state


def model_as_given(
    weights: str, labels: LabelList, image_size: int, prepared_dir: Path
) -> tuple[dict[str, torch.Tensor], ModelInfo, dict[str, Any]]:
    """The state_dict, record and ``reports/train.json`` of an evaluate-only run on the prepared data;
    refuses what would make its judgement wrong (a finding it cannot score, another size or rule)."""
    if weights in ("imagenet", "none"):
        raise ChexnetError(
            f"epochs: 0 judges the model in `weights` without training, but weights is {weights!r}: give "
            "a model file (yours, the seed's, or one made by chexnet import), or train (epochs: 1 or more)"
        )
    model, info = load_model(weights)
    missing = [name for name in labels.names if name not in info.labels.names]
    if missing:
        raise LabelMismatchError(
            f"epochs: 0: the model {weights} has no output for {missing} of the data's findings (its "
            f"outputs: {list(info.labels.names)}); map names with data.aliases, leave findings out with "
            "labels: [...] or data.ignore_findings, or fine-tune it (epochs: 1 or more)"
        )
    if info.image_size not in (None, image_size):
        raise ChexnetError(
            f"epochs: 0: the model {weights} was trained at {info.image_size} px but the data is prepared "
            f"at {image_size}: set image_size: {info.image_size}"
        )
    cache.require_rule(prepared_dir, info.input.resize, weights)
    left_out = [name for name in info.labels.names if name not in labels.names]
    thresholds = info.thresholds
    if thresholds is not None:
        thresholds = {**thresholds, "values": {name: thresholds["values"][name] for name in labels.names}}
    sha256 = sha256_of(weights)
    origin = {"kind": "evaluate-only", "weights": str(weights), "sha256": sha256,
              "outputs_left_out": left_out, "model_origin": info.origin}  # fmt: skip
    record = replace(info, labels=labels, image_size=image_size, source="chexnet", origin=origin,
                     thresholds=thresholds)  # fmt: skip
    summary = {"pretrained": True, "evaluate_only": True, "model": str(weights), "model_sha256": sha256,
               "architecture": info.architecture, "epochs_trained": 0, "best_epoch": None,
               "best_val_mean_auroc": None, "outputs_left_out": left_out}  # fmt: skip
    return narrowed_to(model, info, labels), record, summary
