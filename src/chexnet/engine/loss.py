"""The training loss: the seed's BCE, over the labels a table really gives (NaN: masked)."""

from __future__ import annotations

import torch
from torch import nn


class MaskedBCEWithLogitsLoss(nn.Module):
    """``BCEWithLogitsLoss`` over the known labels only: NaN targets (CheXpert-style uncertain or blank
    entries under the ``ignore`` policy) add nothing to the loss or its gradient. With no NaN it is the
    mean over every entry, exactly ``BCEWithLogitsLoss()``. Nothing here waits for the GPU."""

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)  # fp64 in validate
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.where(known, targets, 0.0), pos_weight=weight, reduction="none"
        )
        return (losses * known).sum() / known.sum().clamp(min=1)


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """``pos_weight`` per class: known negatives / known positives (masked entries count as neither)."""
    known = ~torch.isnan(labels)
    positives = torch.where(known, labels, 0.0).sum(dim=0).clamp(min=1)
    return (known.sum(dim=0) - positives).clamp(min=0) / positives
