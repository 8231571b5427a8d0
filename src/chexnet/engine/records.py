"""What train writes beside the model (``<model>.json``): the record that lets every reader use it right.

Apart from the loop (:mod:`chexnet.engine.training`) because it is a contract, not a step of training:
its fields are :class:`chexnet.model.file.ModelInfo`'s.
"""

from __future__ import annotations

from typing import Any

import torch

from chexnet.config.stage import StageParams
from chexnet.core.labels import LabelList
from chexnet.engine.inference import Precision
from chexnet.model.file import ModelInfo
from chexnet.model.network import DEFAULT_ARCHITECTURE, Network, build_network


def model_record(
    params: StageParams,
    labels: LabelList,
    image_size: int,
    pretrained: bool,
    device: torch.device,
    model: Network | None = None,
    started_from: ModelInfo | None = None,
    precision: Precision | None = None,
) -> ModelInfo:
    """What train writes beside the model: its architecture and input rule (``model``'s), the precision
    and layout it trained in (``precision``, the run's :class:`chexnet.engine.state.Placement`; resolved
    from the params where no run trained it), so evaluate, explain and predict run it so; where it
    started from (``started_from``: the record of a model file it was fine-tuned from), and the params."""
    if precision is None:
        precision = Precision.of(params.train.amp, params.train.channels_last, device)
    origin: dict[str, Any] = {"kind": "trained", "initial_weights": params.weights, "pretrained": pretrained}
    if started_from is not None and started_from.origin:
        origin["initial_origin"] = started_from.origin
    model = model if model is not None else build_network(DEFAULT_ARCHITECTURE, len(labels))
    return ModelInfo(
        labels,
        image_size,
        architecture=model.ARCHITECTURE,
        input=model.input_spec,
        run_as=precision.run_as(),
        origin=origin,
        training=params.as_dict(),
    )
