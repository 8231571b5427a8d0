"""Box tables beyond NIH: VinDr-CXR's readers, RSNA's Target rows, any table by column names; several
readers' boxes scored by hand on a tiny case."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexnet.explain import boxes
from chexnet.explain.localisation import box_cases


def _vindr(tmp_path: Path) -> Path:
    path = tmp_path / "annotations.csv"
    pd.DataFrame(
        {
            "image_id": ["a", "a", "a", "b"],
            "class_name": ["Nodule/Mass", "Nodule/Mass", "Aortic enlargement", "No finding"],
            "class_id": [8, 8, 0, 14],
            "rad_id": ["R1", "R2", "R2", "R3"],
            "x_min": [10.0, 60.0, 0.0, np.nan],
            "y_min": [10.0, 60.0, 0.0, np.nan],
            "x_max": [30.0, 90.0, 50.0, np.nan],
            "y_max": [30.0, 90.0, 50.0, np.nan],
        }
    ).to_csv(path, index=False)
    return path


def test_vindr_boxes_keep_every_reader_and_drop_rows_without_a_box(tmp_path: Path):
    table = boxes.read_boxes(_vindr(tmp_path), ["Nodule/Mass", "Aortic enlargement"], layout="vindr")
    assert list(table["reader"]) == ["R1", "R2", "R2"]
    assert table[["x", "y", "w", "h"]].iloc[1].tolist() == [60.0, 60.0, 30.0, 30.0]  # x_max - x_min


def test_a_hit_on_any_readers_box_and_each_readers_own_score_by_hand(tmp_path: Path):
    """Image ``a.png`` 100×100, cache size 100: R1 boxed the nodule at (10..30), R2 at (60..90). The map's
    maximum at (20, 20) is inside R1's box only: a hit (any reader), R1 1.0, R2 0.0."""
    table = boxes.read_boxes(_vindr(tmp_path), ["Nodule/Mass", "Aortic enlargement"], layout="vindr")
    predictions = pd.DataFrame({"image": ["a.png", "b.png"], "row": [0, 1], "width": 100, "height": 100})
    cases = box_cases(predictions, table, 100, ["Nodule/Mass", "Aortic enlargement"])
    nodule = next(c for c in cases if c[2] == "Nodule/Mass")  # matched by file stem: 'a' -> 'a.png'
    heat = np.zeros((100, 100))
    heat[20, 20] = 1.0
    record = boxes.score_case(heat, "Nodule/Mass", nodule[3], nodule[4], 0.5)
    assert record["hit"] and record["readers"] == {"R1": True, "R2": False}
    aorta = next(c for c in cases if c[2] == "Aortic enlargement")
    other = boxes.score_case(np.roll(heat, 60, axis=(0, 1)), "Aortic enlargement", aorta[3], aorta[4], 0.5)
    scores = boxes.localisation_scores([record, other], ["Nodule/Mass", "Aortic enlargement"])
    assert scores["pointing_game"] == 0.5  # the aorta map peaks at (80, 80), outside R2's (0..50) box
    assert scores["per_reader"] == {
        "R1": {"cases": 1, "pointing_game": 1.0},
        "R2": {"cases": 2, "pointing_game": 0.0},
    }


def test_rsna_boxes_are_the_target_rows(tmp_path: Path):
    path = tmp_path / "stage_2_train_labels.csv"
    pd.DataFrame(
        {
            "patientId": ["p1", "p1", "p2"],
            "x": [1.0, 50.0, np.nan],
            "y": [2.0, 60.0, np.nan],
            "width": [10.0, 20.0, np.nan],
            "height": [5.0, 5.0, np.nan],
            "Target": [1, 1, 0],
        }
    ).to_csv(path, index=False)
    table = boxes.read_boxes(path, ["Pneumonia"], layout="rsna")
    assert table[["image", "finding", "x", "w"]].values.tolist() == [
        ["p1", "Pneumonia", 1.0, 10.0],
        ["p1", "Pneumonia", 50.0, 20.0],
    ]


def test_any_table_by_its_column_names_and_a_missing_column_is_named(tmp_path: Path):
    path = tmp_path / "boxes.csv"
    pd.DataFrame(
        {"file": ["a.png"], "label": ["Mass"], "left": [1], "top": [2], "right": [11], "bottom": [22]}
    ).to_csv(path, index=False)
    names = {"image": "file", "finding": "label", "x": "left", "y": "top", "x2": "right", "y2": "bottom"}
    table = boxes.read_boxes(path, ["Mass"], layout="columns", columns=names)
    assert table[["x", "y", "w", "h"]].iloc[0].tolist() == [1.0, 2.0, 10.0, 20.0]
    with pytest.raises(boxes.BoxTableError, match=r"lacks.*'finding'"):
        boxes.read_boxes(
            path, ["Mass"], layout="columns", columns={k: v for k, v in names.items() if k != "finding"}
        )


def test_the_pointing_game_per_subgroup_by_hand():
    """Three cases on cache rows 0, 1, 2: women's rows 0 and 1 (one hit), a man's row 2 (a hit)."""
    records = [{"finding": "Mass", "hit": True, "iobb_over_half": False, "row": 0},
               {"finding": "Mass", "hit": False, "iobb_over_half": False, "row": 1},
               {"finding": "Mass", "hit": True, "iobb_over_half": True, "row": 2}]  # fmt: skip
    groups = pd.DataFrame({"row": [0, 1, 2], "sex": ["F", "F", "M"], "age": [15.0, 70.0, 85.0]})
    scores = boxes.localisation_scores(records, ["Mass"], groups)
    assert scores["per_group"]["sex"] == {"F": {"cases": 2, "pointing_game": 0.5},
                                          "M": {"cases": 1, "pointing_game": 1.0}}  # fmt: skip
    assert set(scores["per_group"]["age"]) == {"0-20", "60-80", "80+"}
    assert "per_group" not in boxes.localisation_scores(records, ["Mass"])
