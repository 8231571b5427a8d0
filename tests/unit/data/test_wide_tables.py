"""CheXpert and MIMIC-CXR-JPG tables: one column per finding, uncertainty and blank policies, views."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexnet.config.demo import DemoParams
from chexnet.core.labels import NIH14, LabelOptions
from chexnet.data import cache, prepare, tables
from chexnet.data.findings import label_rows
from chexnet.data.presets import chexpert as chexpert_preset
from chexnet.data.presets import registry
from chexnet.engine.loss import MaskedBCEWithLogitsLoss
from chexnet.synthetic import layouts
from chexnet.synthetic.demo import generate_demo

TINY = DemoParams(n_patients=20, n_images=40, image_size=48, rgba_images=0, gray16_images=0)


def _prepare(table: pd.DataFrame, root: Path, out: Path, preset: str, **options) -> prepare.PrepareReport:
    views = options.pop("views", ())
    return prepare.prepare_cache(
        table,
        table_path=f"{preset}.csv",
        image_root=root,
        out_dir=out,
        columns=registry.resolve_columns(preset, "", "", ""),
        image_size=32,
        subset=1000,
        seed=0,
        label_options=LabelOptions(**({"min_positives": 1, "drop_rare": True} | options)),
        preset=preset,
        views=views,
    )


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chexpert")
    generate_demo(root, TINY.__class__(**(TINY.__dict__ | {"layout": "chexpert"})))
    return root


def _expected(raw: pd.Series, healthy: pd.Series, uncertain: str, blank: str) -> np.ndarray:
    """The policies written out by hand, cell by cell: a blank on a row whose No Finding is 1.0 is a
    negative whatever data.blank says (the labeler found no pathology there)."""
    out = []
    for value, no_finding in zip(raw, healthy, strict=True):
        if pd.isna(value) and no_finding == 1.0:
            out.append(0.0)
        elif pd.isna(value):
            out.append(0.0 if blank == "negative" else np.nan)
        elif value == -1.0:
            out.append({"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[uncertain])
        else:
            out.append(float(value))
    return np.array(out)


@pytest.mark.parametrize("uncertain", ["ignore", "zeros", "ones"])
@pytest.mark.parametrize("blank", ["negative", "ignore"])
def test_chexpert_policies_cell_by_cell(chexpert: Path, tmp_path: Path, uncertain: str, blank: str):
    table = registry.read_source("chexpert", chexpert / layouts.get("chexpert").table)
    assert (table[list(NIH14)] == -1.0).any().any() and table[list(NIH14)].isna().any().any()
    _prepare(table, chexpert, tmp_path, "chexpert", uncertain=uncertain, blank=blank)
    index = cache.load_index(tmp_path)
    labels = cache.load_labels(tmp_path)
    assert "No Finding" not in labels.names and labels.names == tuple(sorted(labels.names))
    truth = cache.label_matrix(index, labels)
    rows = table.set_index("Path").loc[index["image"]]
    for j, name in enumerate(labels.names):
        expected = _expected(rows[name], rows["No Finding"], uncertain, blank)
        np.testing.assert_array_equal(truth[:, j], expected, err_msg=name)
    assert (rows["No Finding"] == 1.0).any() and rows.loc[
        rows["No Finding"] == 1.0, list(NIH14)
    ].isna().any().any()
    assert list(index["patient"][:2]) == ["10000", "10000"] or index["patient"].str.isdigit().all()
    masked = int(np.isnan(truth).sum())
    assert (masked > 0) == (uncertain == "ignore" or blank == "ignore")


def test_per_finding_policy_and_the_masked_loss_by_hand(chexpert: Path, tmp_path: Path):
    table = registry.read_source("chexpert", chexpert / layouts.get("chexpert").table)
    policy = {"default": "ignore", "Edema": "ones", "Atelectasis": "zeros"}
    _prepare(table, chexpert, tmp_path, "chexpert", uncertain=policy)
    index, labels = cache.load_index(tmp_path), cache.load_labels(tmp_path)
    truth = cache.label_matrix(index, labels)
    rows = table.set_index("Path").loc[index["image"]]
    for name, rule in (("Edema", "ones"), ("Atelectasis", "zeros"), ("Mass", "ignore")):
        expected = _expected(rows[name], rows["No Finding"], rule, "negative")
        np.testing.assert_array_equal(truth[:, labels.index(name)], expected)

    # the loss over that matrix, by hand from the table's cells: uncertain cells of ignored findings skipped
    torch.manual_seed(0)
    logits = torch.randn(truth.shape, dtype=torch.float64)
    loss = MaskedBCEWithLogitsLoss()(logits, torch.from_numpy(truth).double()).item()
    terms = []
    for i in range(len(rows)):
        for j, name in enumerate(labels.names):
            cell = rows[name].iloc[i]
            if cell == -1.0 and policy.get(name, "ignore") == "ignore":
                continue
            y = 1.0 if cell == 1.0 or (cell == -1.0 and policy.get(name) == "ones") else 0.0
            p = 1 / (1 + np.exp(-logits[i, j].item()))
            terms.append(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert loss == pytest.approx(np.mean(terms), rel=1e-9)
    assert len(terms) == int((~np.isnan(truth)).sum())


def test_chexpert_view_filter_is_counted(chexpert: Path, tmp_path: Path):
    raw = pd.read_csv(chexpert / layouts.get("chexpert").table)
    lateral = int((raw[list(NIH14)] == 1.0).any(axis=1).to_numpy().argmax())  # a row with a positive
    raw.loc[lateral, ["Frontal/Lateral", "AP/PA"]] = ["Lateral", np.nan]  # as CheXpert writes a lateral
    raw.to_csv(tmp_path / "train.csv", index=False)
    table = registry.read_source("chexpert", tmp_path / "train.csv")
    report = _prepare(table, chexpert, tmp_path, "chexpert", views=["lateral"])
    assert report.views["rows_kept"] == 1 and report.views["rows_dropped"] == len(table) - 1
    report = _prepare(table, chexpert, tmp_path / "pa", "chexpert", views=["PA", "AP"])
    assert report.views["rows_kept"] == len(table) - 1 and report.views["dropped_by_view"] == {"lateral": 1}


def test_a_cell_that_is_not_a_label_names_column_and_row(chexpert: Path, tmp_path: Path):
    table = registry.read_source("chexpert", chexpert / layouts.get("chexpert").table)
    table["Mass"] = table["Mass"].astype(object)
    table.loc[3, "Mass"] = "yes"
    with pytest.raises(tables.DataError, match=r"column 'Mass', row 3: 'yes' is not 1.0, 0.0, -1.0 or blank"):
        _prepare(table, chexpert, tmp_path, "chexpert")
    table = table.drop(columns=["Mass"]).assign(Notes="free text")
    report = _prepare(table, chexpert, tmp_path, "chexpert", ignore=("Notes",))
    assert "Notes" not in cache.load_labels(tmp_path).names and report.images_written == len(table)


def test_aliases_map_chexpert_names_onto_nih_names_exactly(chexpert: Path, tmp_path: Path):
    table = registry.read_source("chexpert", chexpert / layouts.get("chexpert").table)
    table = table.rename(columns={"Effusion": "Pleural Effusion"})
    _prepare(table, chexpert, tmp_path, "chexpert", spec="nih14", aliases={"Pleural Effusion": "Effusion"})
    assert cache.load_labels(tmp_path).names == NIH14


def test_mimic_join_paths_patients_and_study_labels(tmp_path: Path):
    """Labels are per study: both images of study 50000001 get its labels; paths are built as MIMIC's."""
    labels = pd.DataFrame(
        {
            "subject_id": [10000032, 10000032, 10000764],
            "study_id": [50000001, 50000002, 50000003],
            "No Finding": [np.nan, 1.0, np.nan],
            "Edema": [1.0, np.nan, -1.0],
            "Cardiomegaly": [0.0, np.nan, 1.0],
        }
    )
    metadata = pd.DataFrame(
        {
            "dicom_id": ["d1", "d2", "d3", "d4"],
            "subject_id": [10000032, 10000032, 10000032, 10000764],
            "study_id": [50000001, 50000001, 50000002, 50000003],
            "ViewPosition": ["PA", "LATERAL", "AP", "PA"],
        }
    )
    labels.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    metadata.to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    for row in metadata.itertuples():
        folder = (
            tmp_path / "files" / f"p{str(row.subject_id)[:2]}" / f"p{row.subject_id}" / f"s{row.study_id}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40), 50, np.uint8)).save(folder / f"{row.dicom_id}.jpg", quality=95)
    table = registry.read_source(
        "mimic", tmp_path / "mimic-cxr-2.0.0-chexpert.csv", tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"
    )
    report = _prepare(table, tmp_path, tmp_path / "out", "mimic")
    assert report.images_written == 4 and report.rejected == {}
    index = cache.load_index(tmp_path / "out")
    assert index["image"][0] == "files/p10/p10000032/s50000001/d1.jpg"
    assert list(index["patient"]) == ["10000032"] * 3 + ["10000764"]
    found = cache.label_matrix(index, cache.load_labels(tmp_path / "out"))  # Cardiomegaly, Edema
    np.testing.assert_array_equal(found, [[0, 1], [0, 1], [0, 0], [1, np.nan]])
    lateral = _prepare(table, tmp_path, tmp_path / "lat", "mimic", views=["lateral"])
    assert lateral.images_written == 1
    with pytest.raises(tables.DataError, match=r"data\.metadata_table"):
        registry.read_source("mimic", tmp_path / "mimic-cxr-2.0.0-chexpert.csv")


@pytest.mark.parametrize("layout", ["nih", "chexpert", "mimic"])
def test_every_demo_layout_prepares_with_its_preset(tmp_path: Path, layout: str):
    generate_demo(tmp_path, TINY.__class__(**(TINY.__dict__ | {"layout": layout})))
    metadata = tmp_path / layouts.MIMIC_METADATA if layout == "mimic" else ""
    table = registry.read_source(layout, tmp_path / layouts.get(layout).table, metadata)
    root = tmp_path / "images" if layout == "nih" else tmp_path
    report = _prepare(table, root, tmp_path / "out", layout)
    assert report.images_written == 40 and report.rejected == {}
    boxes = pd.read_csv(tmp_path / "BBox_List.csv")
    assert set(boxes["Image Index"]) <= set(cache.load_index(tmp_path / "out")["image"])


def test_no_finding_makes_blanks_negatives_except_support_devices_cell_by_cell(tmp_path: Path):
    """CheXpert's rule (Irvin et al. 2019; torchxrayvision's CheX_Dataset reads it so): No Finding = 1
    means no pathology was found, so a blank pathology cell on that row is a negative even under
    ``blank: ignore``; Support Devices is not a pathology and keeps the blank policy; an explicit value
    stays what it says."""
    table = pd.DataFrame({
        "Path": [f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(6)],
        "Frontal/Lateral": "Frontal", "AP/PA": "PA", "Sex": "Male", "Age": 50,
        "No Finding":      [1.0,    1.0,    np.nan, np.nan, 1.0,    np.nan],
        "Edema":           [np.nan, 0.0,    np.nan, 1.0,    np.nan, -1.0],
        "Support Devices": [np.nan, 1.0,    np.nan, np.nan, np.nan, 1.0],
    })  # fmt: skip
    table = chexpert_preset.read(table, "train.csv", "")
    columns = registry.resolve_columns("chexpert", "", "", "")
    table["table_row"] = range(len(table))
    for blank in ("ignore", "negative"):
        labelled = label_rows(table, columns, LabelOptions(min_positives=1, blank=blank), "chexpert", "t.csv")
        edema = labelled.labels[:, labelled.label_list.index("Edema")]
        devices = labelled.labels[:, labelled.label_list.index("Support Devices")]
        other_blank = np.nan if blank == "ignore" else 0.0
        np.testing.assert_array_equal(edema, [0.0, 0.0, other_blank, 1.0, 0.0, np.nan])
        np.testing.assert_array_equal(devices, [other_blank, 1.0, other_blank, other_blank, other_blank, 1.0])
        assert labelled.negatives_from_no_finding == {"Edema": 2}


def _mimic_demo(root: Path) -> tuple[Path, Path, Path]:
    generate_demo(root, TINY.__class__(**(TINY.__dict__ | {"layout": "mimic"})))
    return root / layouts.MIMIC_TABLE, root / layouts.MIMIC_METADATA, root / layouts.MIMIC_PATIENTS


def test_mimic_sex_and_age_come_from_mimic_iv_patients_joined_on_subject_id(tmp_path: Path):
    """MIMIC-CXR carries no sex or age; MIMIC-IV's patients.csv (data.demographics_table) does. Each
    image's groups must be its own patient's row, read by hand here; a patient missing from patients.csv
    is ``unknown`` and counted, not dropped, and not given a neighbour's values."""
    table_path, metadata, patients_path = _mimic_demo(tmp_path)
    patients = pd.read_csv(patients_path)
    assert list(patients.columns[:3]) == ["subject_id", "gender", "anchor_age"]
    missing = int(patients["subject_id"].iloc[0])
    patients.iloc[1:].to_csv(tmp_path / "patients_less_one.csv", index=False)
    without = registry.read_source("mimic", table_path, metadata)
    assert "gender" not in without.columns  # MIMIC-CXR alone: no sex, no age
    table = registry.read_source("mimic", table_path, metadata, tmp_path / "patients_less_one.csv")
    report = _prepare(table, tmp_path, tmp_path / "out", "mimic")
    assert report.images_written == 40 and set(report.subgroups) == {"sex", "age", "view"}
    index, groups = cache.load_index(tmp_path / "out"), cache.load_groups(tmp_path / "out")
    by_subject = patients.set_index("subject_id")
    for image, patient, sex, age in zip(index["image"], index["patient"], groups["sex"], groups["age"],
                                        strict=True):  # fmt: skip
        subject = int(patient)
        assert f"/p{subject}/" in image
        if subject == missing:
            assert sex == "unknown" and np.isnan(age)
        else:
            assert sex == by_subject.at[subject, "gender"]  # MIMIC-IV writes F/M, as groups.parquet does
            assert age == by_subject.at[subject, "anchor_age"]
    images_of_missing = int((index["patient"] == str(missing)).sum())
    assert images_of_missing >= 1
    assert report.join["images_without_demographics"] == images_of_missing
    assert report.join["patients_without_demographics"] == 1
    assert report.as_dict()["join"]["demographics_rows"] == len(patients) - 1


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda p: pd.concat([p, p.iloc[[2]]]), r"patient 1001\d+ on rows \[2, \d+\].*one row per patient"),
        (lambda p: p.assign(ViewPosition="PA"), r"\['ViewPosition'\] are in both"),
        (lambda p: p.assign(subject_id=p["subject_id"] + 5_000_000), r"no patient of .* has a row in"),
        (lambda p: p.rename(columns={"subject_id": "patient"}), r"has no column 'subject_id'"),
    ],
    ids=["twice", "shared-column", "other-release", "no-key"],
)
def test_a_demographics_table_that_would_mislabel_subgroups_is_refused(tmp_path: Path, spoil, message):
    table_path, metadata, patients_path = _mimic_demo(tmp_path)
    spoil(pd.read_csv(patients_path)).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(tables.DataError, match=message):
        registry.read_source("mimic", table_path, metadata, tmp_path / "bad.csv")


def test_demographics_keys_match_across_int_float_and_text_ids(tmp_path: Path):
    """MIMIC's subject_id is an int in one file and may be read as float (a blank elsewhere) or text in
    another: the join must not miss them."""
    table = pd.DataFrame({"Image Index": ["a.png", "b.png", "c.png"], "Patient ID": [7, 8, 9]})
    pd.DataFrame({"Patient ID": ["7", "8.0", None], "Sex": ["F", "M", "F"]}).to_csv(tmp_path / "d.csv",
                                                                                    index=False)  # fmt: skip
    joined = tables.join_demographics(table, tmp_path / "d.csv", "Patient ID", "t.csv")
    assert joined["Sex"].tolist()[:2] == ["F", "M"] and pd.isna(joined["Sex"].iloc[2])
    assert joined.attrs["join"]["images_without_demographics"] == 1
    with pytest.raises(tables.DataError, match=r"data\.patient_column: none"):
        tables.join_demographics(table, tmp_path / "d.csv", None, "t.csv")
