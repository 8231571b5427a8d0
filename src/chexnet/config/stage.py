"""The params one stage reads: the top level and the sections it names, each checked in full.

A stage script names its sections (``run_stage(__doc__, main, sections=(DataParams,))``), so its import
closure, and with it its ``dvc.yaml`` dependencies, holds only their schema modules: a comment in the
train section's schema reruns train and what reads ``train:``, never prepare. Unknown top-level keys and
every key of the named sections are refused as :func:`chexnet.config.params.load_params` refuses them;
the other sections are checked in full by the check stage, which runs before every other stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from chexnet.config.common import SECTIONS, CommonParams
from chexnet.config.schema import ParamsError, build, read_params_file

_COMMON = tuple(spec.name for spec in dataclasses.fields(CommonParams))


class StageParams:
    """``params.seed``, ``params.data``, ...: the top level, and the sections this stage reads."""

    def __init__(self, common: CommonParams, sections: dict[str, Any]):
        self._common, self._sections = common, sections

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _COMMON:
            return getattr(self._common, name)
        if name in self._sections:
            return self._sections[name]
        if name in SECTIONS:
            raise AttributeError(
                f"this stage does not read the params section {name!r}: name its class in the stage's "
                "run_stage(..., sections=...) and its keys in the stage's dvc.yaml params"
            )
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """The top level and the sections read, as :func:`dataclasses.asdict` gives them."""
        return dataclasses.asdict(self._common) | {
            k: dataclasses.asdict(v) for k, v in self._sections.items()
        }


def stage_params_from_dict(raw: dict[str, Any] | None, sections: tuple[type, ...]) -> StageParams:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"params: the top level must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(_COMMON) - set(SECTIONS))
    if unknown:
        raise ParamsError(
            f"params: unknown key(s) {', '.join(map(repr, unknown))} at the top level; known keys: "
            f"{', '.join(sorted({*_COMMON, *SECTIONS}))}"
        )
    common = build(CommonParams, {key: value for key, value in raw.items() if key in _COMMON})
    return StageParams(
        common, {cls.SECTION: build(cls, raw.get(cls.SECTION), cls.SECTION) for cls in sections}
    )


def load_stage_params(path: str | Path, sections: tuple[type, ...]) -> StageParams:
    """``params.yaml`` (missing: all defaults) read for a stage that uses ``sections``."""
    return stage_params_from_dict(read_params_file(path), sections)
