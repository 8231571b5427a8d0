from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexnet.config.demo import DemoParams
from chexnet.core.labels import LabelMismatchError
from chexnet.explain import boxes
from chexnet.explain import localisation as explain
from chexnet.model.network import CheXNet
from chexnet.synthetic.demo import DEMO_BOXES, generate_demo
from tests.helpers import LABELS

CPU = torch.device("cpu")


def test_real_nih_box_table_parses(nih_dir: Path):
    table = boxes.read_boxes(nih_dir / "BBox_List_2017.csv.gz", LABELS)
    assert len(table) == 984 and table["image"].nunique() == 880
    assert set(table["finding"]) == {
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
    }
    assert (table[["x", "y"]] >= 0).all().all() and (table["x"] + table["w"] <= 1024 + 1).all()


def test_demo_box_table_parses(tmp_path: Path):
    generate_demo(
        tmp_path, DemoParams(n_patients=5, n_images=8, image_size=64, rgba_images=0, gray16_images=0)
    )
    table = boxes.read_boxes(tmp_path / DEMO_BOXES, LABELS)
    assert list(table.columns) == [*boxes.BOX_COLUMNS, "reader"] and len(table) > 0


def test_unknown_box_finding_is_an_error(tmp_path: Path):
    (tmp_path / "b.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Tumour,1,2,3,4\n")
    with pytest.raises(LabelMismatchError, match=r"Tumour.*Atelectasis"):  # both lists shown
        boxes.read_boxes(tmp_path / "b.csv", LABELS)
    assert list(boxes.read_boxes(tmp_path / "b.csv", ["Massa"], {"Tumour": "Massa"})["finding"]) == ["Massa"]
    (tmp_path / "c.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,1,two,3,4\n")
    with pytest.raises(boxes.BoxTableError, match=r"row 2 .*a\.png.*y = 'two' is not a number"):
        boxes.read_boxes(tmp_path / "c.csv", LABELS)


def test_boxes_scale_from_the_original_image_to_the_heat_map():
    assert boxes.scale_box(512, 256, 128, 64, 1024, 1024, 224) == (112, 56, 28, 14)
    x, y, w, h = boxes.scale_box(1000, 1250, 500, 500, 2000, 2500, 224)  # not square: each axis its own scale
    assert (x, w) == (112, 56) and (y, h) == (112, pytest.approx(44.8))


def test_pointing_game_and_iobb_on_hand_made_maps():
    heat = np.zeros((100, 100), np.float32)
    heat[20:30, 60:80] = 1.0  # a hot block at x 60..79, y 20..29
    heat[25, 70] = 2.0
    assert boxes.pointing_hit(heat, [(55, 15, 30, 20)])  # x 55..85, y 15..35 holds the maximum
    assert not boxes.pointing_hit(heat, [(0, 0, 50, 50)])
    assert boxes.predicted_box(heat, 0.4) == (60, 20, 20, 10)
    assert boxes.iobb((60, 20, 20, 10), (60, 20, 10, 10)) == pytest.approx(0.5)
    assert boxes.iobb((60, 20, 20, 10), (0, 0, 100, 100)) == 1.0
    summary = boxes.localisation_scores(
        [
            {"finding": "Mass", "hit": True, "iobb_over_half": False},
            {"finding": "Mass", "hit": False, "iobb_over_half": False},
            {"finding": "Nodule", "hit": True, "iobb_over_half": True},
        ],
        LABELS,
    )
    assert summary["cases"] == 3 and summary["pointing_game"] == pytest.approx(2 / 3)
    assert summary["per_finding"]["Mass"] == {"cases": 2, "pointing_game": 0.5, "iobb_over_0.5": 0.0}


def _images_and_predictions(n=6, size=64):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "row": range(n),
            "image": [f"{i:08d}_000.png" for i in range(n)],
            "patient": [str(i) for i in range(n)],
            "width": 256,
            "height": 256,
        }
    )
    frame[list(LABELS)] = 0
    frame.loc[:2, "Mass"] = 1
    for label in LABELS:
        frame[f"p_{label}"] = rng.random(n)
    return images, frame


def test_top_k_overlays_and_localisation_write_and_score(tmp_path: Path):
    torch.manual_seed(0)
    model = CheXNet()
    images, predictions = _images_and_predictions()
    rows = explain.top_k_overlays(
        model,
        images,
        predictions,
        list(LABELS),
        k=2,
        target_layer="features[-1]",
        device=CPU,
        out_dir=tmp_path,
    )
    assert [row["finding"] for row in rows] == ["Mass", "Mass"]
    assert (tmp_path / "Mass.png").exists() and (tmp_path / "Mass" / "top2.png").exists()
    box_table = pd.DataFrame(
        {
            "image": ["00000000_000.png", "00000001_000.png", "elsewhere.png"],
            "finding": ["Mass", "Nodule", "Mass"],
            "x": 0.0,
            "y": 0.0,
            "w": 128.0,
            "h": 256.0,
        }
    )
    scores = explain.localisation(
        model, images, predictions, box_table, list(LABELS), target_layer="final_relu", device=CPU
    )
    assert scores["cases"] == 2 and set(scores["per_finding"]) == {
        "Mass",
        "Nodule",
    }  # elsewhere.png: not in test
    assert 0 <= scores["pointing_game"] <= 1
