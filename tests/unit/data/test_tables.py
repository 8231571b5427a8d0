"""Tables read into one row per image: merged rows, wide-table columns and policy keys that name nothing,
MIMIC joins, views, and a cache that cannot fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexnet.core.labels import LabelOptions, RareLabelError
from chexnet.data import cache, prepare, tables
from chexnet.data.presets import base as presets_base
from chexnet.data.presets import registry
from tests.helpers import nih_named_pngs

SEED = registry.resolve_columns("seed", "", "", "")


# --- the table ----------------------------------------------------------------------------------------
def _prepare(tmp_path: Path, table: pd.DataFrame, columns=SEED, **options) -> prepare.PrepareReport:
    return prepare.prepare_cache(
        table, table_path="t.parquet", image_root=tmp_path / "images", out_dir=tmp_path / "prepared",
        columns=columns, image_size=32, subset=100, seed=0, workers=1, max_rejected_fraction=1.0,
        label_options=LabelOptions(**({"min_positives": 1} | options)),
    )  # fmt: skip


def test_one_row_per_image_and_finding_is_merged_with_findings_united(tmp_path: Path):
    names = nih_named_pngs(tmp_path / "images", 4)
    rows = [(names[0], "Mass", 0), (names[0], "Effusion", 0), (names[0], "Nodule", 0),
            (names[1], "No Finding", 1), (names[2], "Effusion", 2), (names[2], "No Finding", 2),
            (names[3], "Mass", 3)]  # fmt: skip
    table = pd.DataFrame(rows, columns=["imagem", "patologia", "paciente_id"])
    report = _prepare(tmp_path, table)
    assert report.images_written == 4 and report.duplicate_rows_merged == 3
    assert report.as_dict()["duplicate_rows_merged"] == 3
    index = cache.load_index(tmp_path / "prepared")
    by_image = index.set_index("image")
    assert list(report.labels.names) == ["Effusion", "Mass", "Nodule"]
    assert by_image.loc[names[0], ["Effusion", "Mass", "Nodule"]].tolist() == [1, 1, 1]
    assert by_image.loc[names[2], ["Effusion", "Mass", "Nodule"]].tolist() == [1, 0, 0]
    assert int(index[["Effusion", "Mass", "Nodule"]].to_numpy().sum()) == 5  # every positive kept


def test_rows_of_one_image_with_two_patients_are_refused_with_the_rows(tmp_path: Path):
    names = nih_named_pngs(tmp_path / "images", 2)
    table = pd.DataFrame(
        [(names[0], "Mass", 0), (names[0], "Effusion", 7), (names[1], "Mass", 1)],
        columns=["imagem", "patologia", "paciente_id"],
    )
    with pytest.raises(tables.DataError, match=r"is on rows \[0, 1\].*'patient'"):
        _prepare(tmp_path, table)


def _wide(tmp_path: Path, columns: dict[str, list]) -> tuple[pd.DataFrame, presets_base.Columns]:
    n = len(next(iter(columns.values())))
    names = nih_named_pngs(tmp_path / "images", n)
    table = pd.DataFrame({"Path": [f"patient{i:05d}/study1/{name}" for i, name in enumerate(names)]})
    for folder, name in zip(table["Path"], names, strict=True):
        (tmp_path / "images" / Path(folder).parent).mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).rename(tmp_path / "images" / folder)
    table = table.assign(**columns)
    table["view"] = "PA"
    return table, registry.resolve_columns("chexpert", "", "", "")


def test_an_all_blank_or_all_uncertain_wide_column_is_a_rare_finding_not_a_silent_gap(tmp_path: Path):
    table, columns = _wide(tmp_path, {"Edema": [1.0, 0.0, 1.0, 0.0], "Mass": [np.nan] * 4,
                                      "Nodule": [-1.0, np.nan, -1.0, np.nan]})  # fmt: skip
    with pytest.raises(RareLabelError, match=r"'Mass' ×0.*'Nodule' ×0"):
        _prepare(tmp_path, table, columns)
    dropped = _prepare(tmp_path, table, columns, drop_rare=True)
    assert list(dropped.labels.names) == ["Edema"] and dropped.labels_dropped == {"Mass": 0, "Nodule": 0}


def test_a_misspelt_uncertain_key_is_refused(tmp_path: Path):
    table, columns = _wide(tmp_path, {"Effusion": [1.0, -1.0, 1.0, 0.0], "Edema": [1.0, 0.0, 1.0, 0.0]})
    with pytest.raises(tables.DataError, match=r"data\.uncertain names \['Efusion'\]"):
        _prepare(tmp_path, table, columns, uncertain={"Efusion": "ones"})
    fine = _prepare(tmp_path, table, columns, uncertain={"Effusion": "ones", "default": "zeros"})
    assert fine.images_written == 4


def test_ignore_findings_acts_before_aliases_as_documented(tmp_path: Path):
    names = nih_named_pngs(tmp_path / "images", 4)
    table = pd.DataFrame({"imagem": names, "patologia": ["Infiltrate", "Infiltrate|Mass", "Mass", "Mass"],
                          "paciente_id": range(4)})  # fmt: skip
    report = _prepare(tmp_path, table, aliases={"Infiltrate": "Infiltration"}, ignore=("Infiltrate",))
    assert list(report.labels.names) == ["Mass"] and report.findings_ignored == {"Infiltrate": 2}
    with pytest.raises(tables.DataError, match=r"ignore_findings names \['Infiltration'\]"):
        _prepare(tmp_path, table, aliases={"Infiltrate": "Infiltration"}, ignore=("Infiltration",))


def test_a_view_filter_that_keeps_nothing_names_the_views_present(tmp_path: Path):
    table, columns = _wide(tmp_path, {"Edema": [1.0, 0.0, 1.0, 0.0]})
    with pytest.raises(tables.DataError, match=r"data\.views \['AP'\] matches no row.*'PA': 4"):
        prepare.prepare_cache(
            table, table_path="t.csv", image_root=tmp_path / "images", out_dir=tmp_path / "out",
            columns=columns, image_size=32, subset=10, seed=0, views=["AP"], preset="chexpert",
            label_options=LabelOptions(min_positives=1),
        )  # fmt: skip


def _mimic_tables(tmp_path: Path, metadata_rows: list, label_rows: list) -> pd.DataFrame:
    labels = pd.DataFrame(label_rows, columns=["subject_id", "study_id", "Edema"])
    metadata = pd.DataFrame(metadata_rows, columns=["dicom_id", "subject_id", "study_id", "ViewPosition"])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    metadata.to_csv(tmp_path / "metadata.csv", index=False)
    return registry.read_source("mimic", tmp_path / "labels.csv", tmp_path / "metadata.csv")


def test_mimic_metadata_with_a_blank_subject_is_a_counted_reject(tmp_path: Path):
    joined = _mimic_tables(
        tmp_path,
        [("d1", 10000032, 50000001, "PA"), ("d2", None, 50000001, "PA"), ("d3", 10000764, 50000003, "PA")],
        [(10000032, 50000001, 1.0), (10000764, 50000003, 0.0)],
    )
    assert len(joined) == 2
    assert [r["reason"] for r in joined.attrs[tables.SOURCE_REJECTS]] == ["blank_key"]
    for row in joined.itertuples():
        path = tmp_path / "images" / row.image_path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40), 90, np.uint8)).save(path)
    report = prepare.prepare_cache(
        joined, table_path="labels.csv", image_root=tmp_path / "images", out_dir=tmp_path / "out",
        columns=registry.resolve_columns("mimic", "", "", ""), image_size=32, subset=10, seed=0,
        label_options=LabelOptions(min_positives=1), preset="mimic",
    )  # fmt: skip
    assert report.rejected == {"blank_key": 1} and report.rows_in_table == 3 and report.images_written == 2


def test_a_mimic_study_labelled_twice_is_refused_with_its_rows(tmp_path: Path):
    with pytest.raises(tables.DataError, match=r"study_id 50000001 is labelled on rows \[0, 1\]"):
        _mimic_tables(
            tmp_path,
            [("d1", 10000032, 50000001, "PA")],
            [(10000032, 50000001, 1.0), (10000032, 50000001, 0.0)],
        )


def test_a_mimic_join_that_matches_nothing_says_so(tmp_path: Path):
    with pytest.raises(tables.DataError, match="matches a study of"):
        _mimic_tables(tmp_path, [("d1", 1, 2, "PA")], [(3, 4, 1.0)])


def test_a_cache_larger_than_the_disk_is_refused_before_decoding(tmp_path: Path, monkeypatch):
    names = nih_named_pngs(tmp_path / "images", 2)
    table = pd.DataFrame({"imagem": names, "patologia": ["Mass", "No Finding"], "paciente_id": [0, 1]})
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(tables.DataError, match=r"needs 0\.0 GB.*lower image_size"):
        _prepare(tmp_path, table)


def test_an_alias_that_matches_no_finding_of_the_table_is_refused():
    from chexnet.core.labels import LabelOptions
    from chexnet.data.findings import long_findings
    from chexnet.data.tables import DataError

    cells = pd.Series(["pleural effusion|nodule", "normal"])
    options = LabelOptions(aliases={"pleural effusion": "Effusion", "nodulle": "Nodule", "mass": "Mass"})
    with pytest.raises(DataError, match=r"aliases \['mass', 'nodulle'\] match no finding"):
        long_findings(cells, options)
    fine = LabelOptions(aliases={"pleural effusion": "Effusion", "nodule": "Nodule"})
    assert long_findings(cells, fine)[1] == {"Effusion": 1, "Nodule": 1, "normal": 1}
