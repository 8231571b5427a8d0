"""PadChest, VinDr-CXR, RSNA Pneumonia and Google's NIH relabels end to end through prepare, on sets the
demo writes in each layout; their subgroup columns; and the refusals of cells a preset cannot read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexnet.config.demo import DemoParams
from chexnet.core.labels import NIH14, LabelOptions
from chexnet.data import cache, prepare, tables
from chexnet.data.presets import padchest, registry, rsna
from chexnet.synthetic import layouts
from chexnet.synthetic.demo import generate_demo

TINY = DemoParams(
    n_patients=20, n_images=40, image_size=48, rgba_images=0, gray16_images=0, external_images=0
)


def _demo(tmp_path: Path, layout: str) -> Path:
    root = tmp_path / layout
    generate_demo(root, dataclasses.replace(TINY, layout=layout))
    return root


def _prepare(root: Path, layout: str, out: Path, metadata: str = "", image_column: str = "", **options):
    written = layouts.get(layout)
    table_path = root / written.table
    report = prepare.prepare_cache(
        registry.read_source(layout, table_path, metadata),
        table_path=table_path,
        image_root=root / written.images,
        out_dir=out,
        columns=registry.resolve_columns(layout, image_column, "", ""),
        image_size=32,
        subset=1000,
        seed=0,
        label_options=LabelOptions(**({"min_positives": 1, "drop_rare": True} | options)),
        preset=layout,
    )
    return report, cache.load_index(out), cache.load_labels(out), cache.load_groups(out)


def _drawn(root: Path) -> pd.DataFrame:
    """The drawn findings of every image, from the demo's box-independent seed layout of the same seed."""
    return generate_demo(root.parent / "seed_twin", dataclasses.replace(TINY, layout="seed"))


def test_padchest_reads_its_list_cells_in_its_own_vocabulary_with_sex_age_and_view(tmp_path: Path):
    root = _demo(tmp_path, "padchest")
    report, index, labels, groups = _prepare(root, "padchest", tmp_path / "out")
    assert report.images_written == 40
    drawn = _drawn(tmp_path / "padchest")
    names = layouts.PADCHEST_NAMES
    expected = {names[f] for cell in drawn["patologia"] for f in cell.split("|") if f in NIH14}
    assert set(labels.names) == expected  # PadChest's terms, never NIH's: an NIH model needs aliases
    truth = cache.label_matrix(index, labels)
    for j, name in enumerate(labels.names):
        nih = next(k for k, v in layouts.PADCHEST_NAMES.items() if v == name)
        holds = [nih in cell.split("|") for cell in drawn["patologia"]]
        np.testing.assert_array_equal(truth[:, j], holds)
    assert set(groups["sex"]) <= {"F", "M"} and groups["age"].between(5, 100).all()
    assert list(groups["sex"]) == list(drawn["sexo"]) and list(groups["view"]) == list(drawn["incidencia"])


def test_padchest_refuses_a_cell_that_is_not_a_list_and_never_evaluates_it(tmp_path: Path):
    table = pd.DataFrame(
        {"ImageID": ["a.png", "b.png"], "Labels": ["['normal']", "__import__('os').system('x')"]}
    )
    with pytest.raises(tables.DataError, match=r"row 1: .* is not a list of findings"):
        padchest.read(table, "padchest.csv", "")
    normal = padchest.read(pd.DataFrame({"ImageID": ["a"], "Labels": ["['normal']"]}), "p.csv", "")
    assert normal["findings"].tolist() == ["No Finding"]


def test_vindr_an_image_is_positive_when_any_reader_marked_it(tmp_path: Path):
    table = pd.DataFrame({
        "image_id": ["a", "a", "a", "b", "b"],
        "class_name": ["Nodule/Mass", "No finding", "No finding", "No finding", "No finding"],
        "rad_id": ["R1", "R2", "R3", "R1", "R2"],
    })  # fmt: skip
    out = registry.PRESETS["vindr"].read(table, "train.csv", "")
    assert out.set_index("image_id")["findings"].to_dict() == {"a": "Nodule/Mass", "b": "No Finding"}
    assert out["readers"].tolist() == [3, 2] and out["image_path"].tolist() == ["a.dicom", "b.dicom"]


def test_vindr_demo_end_to_end_one_patient_per_image(tmp_path: Path):
    root = _demo(tmp_path, "vindr")
    report, index, labels, _ = _prepare(root, "vindr", tmp_path / "out", image_column="image_png")
    assert report.images_written == 40 and index["patient"].nunique() == 40  # VinDr has no patient ids
    drawn = _drawn(tmp_path / "vindr")
    assert set(labels.names) == {f for cell in drawn["patologia"] for f in cell.split("|") if f in NIH14}


def test_rsna_pneumonia_with_its_header_table_gives_view_sex_and_age(tmp_path: Path):
    root = _demo(tmp_path, "rsna")
    headers = root / "stage_2_train_images_dicom_headers.csv"
    _, index, labels, groups = _prepare(root, "rsna", tmp_path / "out", str(headers), "image_png")
    drawn = _drawn(tmp_path / "rsna")
    assert labels.names == ("Pneumonia",)
    np.testing.assert_array_equal(
        cache.label_matrix(index, labels)[:, 0], drawn["patologia"].str.contains("Pneumonia").astype(float)
    )
    assert list(groups["sex"]) == list(drawn["sexo"]) and list(groups["view"]) == list(drawn["incidencia"])
    bad = pd.DataFrame({"patientId": ["p"], "Target": [2]})
    with pytest.raises(tables.DataError, match="not 0 or 1"):
        rsna.read(bad, "labels.csv", "")


def test_google_relabels_read_yes_no_and_the_rest_as_metadata(tmp_path: Path):
    root = _demo(tmp_path, "google_nih")
    report, index, labels, groups = _prepare(root, "google_nih", tmp_path / "out")
    assert set(labels.names) <= {"Airspace opacity", "Nodule or mass", "Pneumothorax"}  # no fracture drawn
    assert "Fracture" in report.labels_dropped  # 0 positives: dropped and counted, never silently
    drawn = _drawn(tmp_path / "google_nih")
    truth = cache.label_matrix(index, labels)
    nodule = drawn["patologia"].str.contains("Nodule|Mass").astype(float)
    np.testing.assert_array_equal(truth[:, labels.index("Nodule or mass")], nodule)
    assert set(groups.columns) == {"row", "sex", "age", "view"}
    with pytest.raises(tables.DataError, match="is not YES, NO or blank"):
        registry.PRESETS["google_nih"].read(
            pd.DataFrame({"Image Index": ["a"], "Fracture": ["maybe"]}), "g.csv", ""
        )


def test_a_named_subgroup_column_is_carried_and_a_missing_one_is_refused(tmp_path: Path):
    root = _demo(tmp_path, "nih")
    table_path = root / "Data_Entry_2017.csv"
    table = pd.read_csv(table_path).assign(site=lambda t: np.where(t.index % 2, "north", "south"))
    table.to_csv(table_path, index=False)
    common = {
        "table_path": table_path, "image_root": root / "images", "image_size": 32, "subset": 100, "seed": 0,
        "columns": registry.resolve_columns("nih", "", "", ""), "preset": "nih",
        "label_options": LabelOptions(min_positives=1, drop_rare=True),
    }  # fmt: skip
    prepare.prepare_cache(
        registry.read_source("nih", table_path), out_dir=tmp_path / "a", subgroups={"site": "site"}, **common
    )
    groups = cache.load_groups(tmp_path / "a")
    assert set(groups["site"]) == {"north", "south"} and set(groups["sex"]) <= {"F", "M"}
    with pytest.raises(tables.DataError, match=r"data\.subgroups\.hospital"):
        prepare.prepare_cache(registry.read_source("nih", table_path), out_dir=tmp_path / "b",
                              subgroups={"hospital": "Hospital"}, **common)  # fmt: skip
