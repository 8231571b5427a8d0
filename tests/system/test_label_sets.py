"""Any label set, end to end through the stage scripts, the CLI and the reports, by name.

A seed-format table whose findings are in Portuguese with its own no-finding token, and a CheXpert-layout
table with uncertain and blank cells under U-Ignore: prepare → split → train → evaluate → explain, then
``chexnet predict`` and ``chexnet explain``. Tiny settings (60 images, 32 px, 1 epoch, one heat map a
finding). The stage scripts and the CLI run in this process (``tests.helpers.run_stage`` and ``run_cli``:
the same scripts, without an interpreter and a torch import per step; ``dvc repro`` runs them as processes
in test_pipeline.py); here because each case trains DenseNet121 end to end, about 20 s.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from chexnet.config.demo import DemoParams
from chexnet.core.labels import NIH14, file_safe
from chexnet.synthetic import layouts
from chexnet.synthetic.demo import DEMO_BOXES, generate_demo
from tests.helpers import run_cli, run_stage

PORTUGUESE = dict(
    zip(
        NIH14,
        [
            "Atelectasia",
            "Cardiomegalia",
            "Derrame",
            "Infiltração",
            "Massa",
            "Nódulo",
            "Pneumonia",
            "Pneumotórax",
            "Consolidação",
            "Edema",
            "Enfisema",
            "Fibrose",
            "Espessamento Pleural",
            "Hérnia",
        ],
        strict=True,
    )
)
TINY = {
    "epochs": 1,
    "batch_size": 8,
    "image_size": 32,
    "weights": "none",
    "device": "cpu",
    "seed": 3,
    "evaluate": {"grid_images": 4},
    "explain": {"top_k": 1},
}
STAGES = ["prepare", "split", "train", "evaluate", "card", "explain"]


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args}\n{result.stderr[-4000:]}"
    return result


def _pipeline(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    for stage in STAGES:
        _ok(run_stage(stage, cwd=work))


@pytest.fixture(scope="module")
def portuguese(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pt")
    demo = work / "demo"
    generate_demo(demo, DemoParams(n_patients=30, n_images=60, image_size=64, rgba_images=0, gray16_images=0))
    table = pd.read_parquet(demo / layouts.get("seed").table)
    table["patologia"] = [
        "Sem Achados" if cell == "No Finding" else "|".join(PORTUGUESE[f] for f in cell.split("|"))
        for cell in table["patologia"]
    ]
    table.to_parquet(demo / "gold.parquet", index=False)
    boxes = pd.read_csv(demo / DEMO_BOXES)
    boxes["Finding Label"] = boxes["Finding Label"].map(PORTUGUESE)
    boxes.to_csv(demo / "caixas.csv", index=False)
    data = {
        "table": "demo/gold.parquet",
        "images": "demo/images",
        "bbox_table": "demo/caixas.csv",
        "no_finding": "Sem Achados",
        "min_positives": 1,
    }
    _pipeline(work, TINY | {"data": data, "split": {"val_fraction": 0.2, "test_fraction": 0.3}})
    return work


def test_portuguese_findings_travel_by_name_through_every_stage(portuguese: Path):
    names = sorted(PORTUGUESE.values())  # the seed's MultiLabelBinarizer order of the table's findings
    prepared = json.loads((portuguese / "data/prepared/labels.json").read_text())
    assert prepared["labels"] == names and prepared["source"] == "from_data"
    assert prepared["no_finding"] == "Sem Achados" and "Sem Achados" not in names
    model = json.loads((portuguese / "models/chexnet_model.json").read_text())
    assert model["labels"] == names and model["image_size"] == 32
    evaluate = json.loads((portuguese / "reports/evaluate.json").read_text())
    assert set(names) <= set(evaluate["auroc"]) and "Derrame" in evaluate["at_thresholds"]["per_class"]
    thresholds = json.loads((portuguese / "models/thresholds.json").read_text())
    assert thresholds["labels"] == names and list(thresholds["thresholds"]) == names
    card = (portuguese / "reports/model_card.md").read_text()
    assert "| Nódulo |" in card and "Sem Achados" in card and "| Nodule |" not in card
    report = (portuguese / "reports/classification_report.txt").read_text()
    assert "Pneumotórax" in report
    assert set(pd.read_csv(portuguese / "plots/roc.csv")["finding"]) <= set(names)
    test = pd.read_parquet(portuguese / "data/predictions/test.parquet")
    assert {"Derrame", "p_Derrame", "p_Espessamento Pleural"} <= set(test.columns)
    explained = json.loads((portuguese / "reports/explain.json").read_text())
    assert set(explained["localisation"]["per_finding"]) <= set(names)
    cams = {p.stem for p in (portuguese / "plots/cam").glob("*.png")}
    assert cams and cams <= {file_safe(n) for n in names}


def test_portuguese_model_predicts_and_explains_by_name(portuguese: Path):
    image = portuguese / "x.png"
    Image.fromarray(np.full((80, 80), 120, np.uint8)).save(image)
    predicted = _ok(run_cli("predict", str(image), "--json", cwd=portuguese))
    document = json.loads(predicted.stdout)
    assert (
        document["model"]["findings"] == sorted(PORTUGUESE.values()) and document["model"]["image_size"] == 32
    )
    assert set(document["results"][0]["probabilities"]) == set(PORTUGUESE.values())
    explained = _ok(run_cli("explain", str(image), "--finding", "Derrame", "--out", "hm", cwd=portuguese))
    assert "\tDerrame\t" in explained.stdout and (portuguese / "hm" / "x_Derrame.png").exists()
    refused = run_cli("explain", str(image), "--finding", "Effusion", cwd=portuguese)
    assert refused.returncode == 1 and "Derrame" in refused.stderr and "Traceback" not in refused.stderr


def test_an_english_box_table_is_refused_by_a_portuguese_model(portuguese: Path):
    params = yaml.safe_load((portuguese / "params.yaml").read_text())
    params["data"]["bbox_table"] = "demo/BBox_List.csv"
    (portuguese / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    result = run_stage("explain", cwd=portuguese)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "does not predict" in result.stderr and "Derrame" in result.stderr


def test_chexpert_layout_with_uncertain_labels_ignored_end_to_end(tmp_path: Path):
    generate_demo(
        tmp_path / "demo",
        DemoParams(
            n_patients=30, n_images=60, image_size=64, rgba_images=0, gray16_images=0, layout="chexpert"
        ),
    )
    data = {
        "preset": "chexpert",
        "table": f"demo/{layouts.get('chexpert').table}",
        "images": "demo",
        "bbox_table": "demo/BBox_List.csv",
        "uncertain": "ignore",
        "blank": "negative",
        "min_positives": 1,
    }
    _pipeline(tmp_path, TINY | {"data": data, "split": {"val_fraction": 0.2, "test_fraction": 0.3}})
    prepared = json.loads((tmp_path / "data/prepared/labels.json").read_text())
    assert sum(prepared["masked_in_table"].values()) == sum(prepared["uncertain_in_table"].values()) > 0
    split = json.loads((tmp_path / "reports/split.json").read_text())
    assert sum(split["test"]["masked"].values()) > 0
    evaluate = json.loads((tmp_path / "reports/evaluate.json").read_text())
    confusion = evaluate["at_0.5"]["micro_confusion"]
    masked_in_test = sum(split["test"]["masked"].values())
    assert sum(confusion.values()) == evaluate["images"] * len(prepared["labels"]) - masked_in_test
    assert "masked" in (tmp_path / "reports/model_card.md").read_text().lower()
