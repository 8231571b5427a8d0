"""The whole params schema: what ``params.yaml`` may hold, its types and its defaults, in one object.

:class:`Params` is the top level (:mod:`chexnet.config.common`) with every section (one module each:
``demo``, ``data``, ``train``, ``split``, ``evaluate``, ``explain``). The check stage and ``chexnet check``
read all of it, so a misspelled key or a wrong value anywhere stops ``dvc repro`` before any work, with
the key's full name in the message; each other stage reads only the sections it uses
(:mod:`chexnet.config.stage`), so that editing one section's schema reruns only the stages that read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexnet.config.common import CommonParams
from chexnet.config.data import DataParams
from chexnet.config.demo import DemoParams
from chexnet.config.evaluate import EvaluateParams
from chexnet.config.explain import ExplainParams
from chexnet.config.schema import build, read_params_file
from chexnet.config.split import SplitParams
from chexnet.config.train import TrainParams

SECTION_CLASSES = (DemoParams, DataParams, TrainParams, SplitParams, EvaluateParams, ExplainParams)


@dataclass(frozen=True)
class Params(CommonParams):
    demo: DemoParams = field(default_factory=DemoParams)
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    split: SplitParams = field(default_factory=SplitParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    explain: ExplainParams = field(default_factory=ExplainParams)

    def as_dict(self) -> dict[str, Any]:
        """Every key, as :meth:`chexnet.config.stage.StageParams.as_dict` gives a stage's."""
        return dataclasses.asdict(self)


def params_from_dict(raw: dict[str, Any] | None) -> Params:
    """Build and validate :class:`Params` from a parsed mapping; missing keys take their defaults."""
    return build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` (missing file: all defaults) and validate all of it against the schema."""
    return params_from_dict(read_params_file(path))
