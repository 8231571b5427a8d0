"""The train stage's ``epochs: 0``: the model in ``weights`` written as the run's model, as it is
(:func:`chexnet.engine.given.model_as_given` says what is checked), with empty training curves."""

from __future__ import annotations

import logging

from chexnet.core.labels import LabelList
from chexnet.engine import given, training
from chexnet.model.file import save_model
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import record

log = logging.getLogger("chexnet.train")


def write_given_model(weights: str, labels: LabelList, image_size: int) -> None:
    """``models/chexnet_model.pth`` (+ record), ``reports/train.json`` and ``dvclive/`` of an evaluate-only
    run; the dvclive outputs exist (empty: no epochs) because dvc.yaml declares them."""
    state, info, summary = given.model_as_given(weights, labels, image_size, paths.PREPARED_DIR)
    training.EpochLogger(paths.DVCLIVE_DIR).end()
    (paths.DVCLIVE_DIR / "plots").mkdir(parents=True, exist_ok=True)  # dvclive writes none without steps
    save_model(paths.MODEL_FILE, state, info)
    record("train", summary)
    log.info(
        "epochs: 0: %s (%s, sha256 %s…) judged as it is on %s; outputs left out: %s",
        weights, info.architecture, summary["model_sha256"][:12], ", ".join(labels.names),
        ", ".join(summary["outputs_left_out"]) or "none",
    )  # fmt: skip
