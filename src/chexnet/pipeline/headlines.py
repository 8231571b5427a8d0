"""What each stage records as a DVC metric, and what goes to a plain report beside it.

``dvc exp show`` and ``dvc metrics diff`` print every number of every metrics file, so ``metrics/`` holds
the headline figures only: AUROC per finding and its macro/micro means with their intervals, the
pointing game, the counts that say whether the data changed, and training's outcome. Bookkeeping (per
finding split counts, thresholds, calibration bins, rejects by reason) goes to ``reports/<stage>.json``,
a plain output that people and the model card read. Anything that changes from run to run without a
change of data, code or params (timings, where a resumed run started) is never a metric: after a rerun
that changes nothing, ``dvc metrics diff`` prints nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chexnet.core import io


def _pick(full: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: full[key] for key in keys if key in full}


def prepare(full: dict[str, Any]) -> dict[str, Any]:
    keys = ("rows_in_table", "rows_selected", "images_written", "rejected_total", "duplicate_rows_merged")
    headline = _pick(full, keys)
    if "labels" in full:
        headline["findings"] = full["labels"]["count"]
    return headline


def split(full: dict[str, Any]) -> dict[str, Any]:
    headline = {name: _pick(full[name], ("images", "patients")) for name in ("train", "val", "test")}
    return headline | _pick(full, ("patient_overlap",))


def train(full: dict[str, Any]) -> dict[str, Any]:
    keys = ("pretrained", "learning_rate", "train_device", "epochs_trained", "best_epoch",
            "best_val_mean_auroc", "final_train_loss", "final_val_loss", "stopped_early")  # fmt: skip
    return _pick(full, keys)


def evaluate(full: dict[str, Any]) -> dict[str, Any]:
    """AUROC per finding and macro/micro, each ``{value, ci_low, ci_high}`` (``undefined`` when none);
    a figure that cannot be trusted carries ``caution: true`` (the reasons are in the report)."""
    caution = full.get("caution", {})
    flagged = set(caution.get("findings", {}))
    everything = bool(caution.get("overall"))
    auroc = {
        key: value | ({"caution": True} if everything or key in flagged else {})
        for key, value in full["auroc"].items()
    }
    headline: dict[str, Any] = {"auroc": auroc}
    if full.get("subgroups"):  # the largest gap per attribute, for AUROC and underdiagnosis
        headline["subgroups"] = {
            attribute: {
                k: _pick(v, ("group", "reference", "value", "ci_low", "ci_high"))
                for k, v in entry["largest_gap"].items()
                if k in ("auroc", "underdiagnosis")
            }
            for attribute, entry in full["subgroups"].items()
        }
    return headline


def explain(full: dict[str, Any]) -> dict[str, Any]:
    scores = full.get("localisation")
    if not scores:
        return {"findings_explained": full["findings_explained"]}
    return _pick(scores, ("cases", "pointing_game", "iobb_over_0.5"))


def external(full: dict[str, Any]) -> dict[str, Any]:
    """An external set's AUROC (as evaluate's, on the shared findings), its size, the subgroup gaps and
    its pointing game, under the set's name: so that ``dvc exp show`` and ``dvc metrics diff`` keep
    ``auroc.macro.value`` the test split's and show ``<set>.auroc.macro.value`` beside it."""
    headline = {"images": full["images"], "patients": full["patients"], **evaluate(full)}
    if full.get("localisation"):
        headline["localisation"] = _pick(full["localisation"], ("cases", "pointing_game", "iobb_over_0.5"))
    return {full["set"]: headline}


HEADLINES = {"prepare": prepare, "split": split, "train": train, "evaluate": evaluate, "explain": explain,
             "external": external}  # fmt: skip


def write(stage: str, full: dict[str, Any], *, report: Path, metrics: Path) -> None:
    """``report`` with everything, ``metrics`` with the stage's headline figures (the pipeline says where:
    ``reports/<stage>.json`` and ``metrics/<stage>.json``, :mod:`chexnet.pipeline.paths`)."""
    io.write_json(report, full)
    io.write_json(metrics, HEADLINES[stage](full))
