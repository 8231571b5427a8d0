"""The evaluate stage run as DVC runs it, in its own process (the unit tests:
tests/unit/evaluation/test_evaluation.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import LABELS, REPO, make_workdir, save_test_model


def _evaluate(work: Path, stage: str = "evaluate") -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{stage}.py")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """The evaluate stage run on a tiny set with a random model, as the pipeline leaves things (built
    once: a test that changes it works on its own copy)."""
    work = make_workdir(tmp_path_factory.mktemp("evaluated") / "work", epochs=1)
    (work / "params.yaml").write_text("weights: none\ndevice: cpu\nevaluate: {bootstrap_resamples: 200}\n")
    save_test_model(work / "models" / "chexnet_model.pth")
    metrics = work / "reports"  # the evaluate stage writes the model card from the stages' reports
    metrics.mkdir()
    prepare = {
        "rows_in_table": 48,
        "rows_selected": 48,
        "images_written": 48,
        "duplicate_rows_merged": 0,
        "rejected": {},
        "rejected_total": 0,
    }
    (metrics / "prepare.json").write_text(json.dumps(prepare))
    split = pd.read_parquet(work / "data" / "split.parquet")
    summary = {}
    for name in ("train", "val", "test"):
        part = split[split["split"] == name]
        positives = {label: int(part[label].sum()) for label in LABELS}
        summary[name] = {
            "images": len(part),
            "patients": int(part["patient"].nunique()),
            "positives": positives,
        }
    (metrics / "split.json").write_text(json.dumps(summary | {"method": "random"}))
    (work / "metrics").mkdir()
    (work / "metrics" / "train.json").write_text(
        json.dumps({"pretrained": False, "best_epoch": 1, "epochs_trained": 1})
    )
    result = _evaluate(work)
    assert result.returncode == 0, result.stderr[-3000:]
    card = _evaluate(work, "card")  # the model card, from the reports evaluate wrote
    assert card.returncode == 0, card.stderr[-3000:]
    return work


def test_evaluate_stage_writes_metrics_with_intervals_thresholds_plots_and_model_card(evaluated: Path):
    headline = json.loads((evaluated / "metrics" / "evaluate.json").read_text())
    assert set(headline) == {"auroc"}  # dvc exp show: AUROC with intervals, nothing else
    summary = json.loads((evaluated / "reports" / "evaluate.json").read_text())
    plain = {
        key: {k: v for k, v in entry.items() if k != "caution"} for key, entry in headline["auroc"].items()
    }
    assert (
        summary["auroc"] == plain and summary["split"] == "test" and summary["bootstrap"]["unit"] == "patient"
    )
    # 6 test patients: below the 10 any interval needs, so every headline figure carries its caution
    assert summary["caution"]["overall"] and all(entry.get("caution") for entry in headline["auroc"].values())
    for key in ("macro", "micro", *LABELS):
        entry = summary["auroc"][key]
        assert entry["value"] is None or entry["ci_low"] <= entry["value"] <= entry["ci_high"], key
    assert set(summary["at_thresholds"]["per_class"]) == set(LABELS)
    thresholds = json.loads((evaluated / "models" / "thresholds.json").read_text())
    assert thresholds["chosen_on"] == "val" and set(thresholds["thresholds"]) == set(LABELS)
    for name in ("roc", "pr"):
        curves = pd.read_csv(evaluated / "plots" / f"{name}.csv")
        assert list(curves.columns[:2]) == ["finding", "point"]
        assert set(curves["finding"]) <= set(LABELS) and len(set(curves["finding"])) > 0
    for png in ("predictions.png", "confusion.png", "reliability.png"):
        assert (evaluated / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    card = (evaluated / "reports" / "model_card.md").read_text()
    headings = [
        "## Model",
        "## Data",
        "## Split",
        "## Performance on the test split",
        "## Operating thresholds",
    ]
    for heading in [*headings, "## Calibration", "## Limits of these numbers"]:
        assert heading in card
    assert "0.8094" in card and "Random initialisation" in card
    assert "**Cannot be trusted**: only 6 test patient(s)" in card
    assert "at random by patient" in card and "official test set" not in card
    report = (evaluated / "reports" / "classification_report.txt").read_text()
    assert "chosen on validation" in report and "threshold 0.5" in report


def test_thresholds_never_look_at_test_labels(evaluated: Path, tmp_path: Path):
    evaluated = Path(shutil.copytree(evaluated, tmp_path / "work"))
    before = (evaluated / "models" / "thresholds.json").read_text()
    auroc_before = json.loads((evaluated / "metrics" / "evaluate.json").read_text())["auroc"]["macro"]
    split = pd.read_parquet(evaluated / "data" / "split.parquet")
    test = split["split"] == "test"
    split.loc[test, list(LABELS)] = 1 - split.loc[test, list(LABELS)]  # every test label inverted
    split.to_parquet(evaluated / "data" / "split.parquet", index=False)
    assert _evaluate(evaluated).returncode == 0
    assert (evaluated / "models" / "thresholds.json").read_text() == before
    auroc_after = json.loads((evaluated / "metrics" / "evaluate.json").read_text())["auroc"]["macro"]
    assert auroc_after["value"] == pytest.approx(
        1 - auroc_before["value"]
    )  # the test labels were used, to measure
