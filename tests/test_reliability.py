"""Round two of "nothing wrong on screen or on disk": each defect a hostile new user found, at its source.

Every test here failed before its fix (the issue's list, in its order): params read as DVC reads them,
rows of one image merged, wide-table columns and policy keys that name nothing, MIMIC joins, DICOM that
is not a radiograph or cannot be decoded, devices, layers, thresholds, JSON files and output folders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexnet.config.params import load_params, params_from_dict
from chexnet.config.schema import ParamsError, read_yaml
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelOptions, RareLabelError
from chexnet.data import cache, dicom, images, prepare, tables
from chexnet.data.presets import base as presets_base
from chexnet.data.presets import registry
from chexnet.engine.inference import resolve_device
from chexnet.model.network import CheXNet, LayerError, check_target_layer
from tests.conftest import REPO, run_cli

SEED = registry.resolve_columns("seed", "", "", "")


# --- params: one YAML reading, DVC's ----------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["1e-4", "1E-4", ".0001", "3e-4", "1.0e-4", "0.0001"])
def test_learning_rates_as_people_type_them_are_numbers_as_dvc_reads_them(tmp_path: Path, spelling: str):
    from dvc.utils.serialize import parse_yaml

    (tmp_path / "params.yaml").write_text(f"lr: {spelling}\n")
    assert load_params(tmp_path / "params.yaml").lr == pytest.approx(float(spelling))
    assert load_params(tmp_path / "params.yaml").lr == parse_yaml(f"lr: {spelling}", "p")["lr"]


def test_yaml_1_2_words_are_text_as_in_dvc():
    from dvc.utils.serialize import parse_yaml

    text = "train:\n  amp: off\n"
    assert read_yaml(text, "p") == parse_yaml(text, "p")
    assert params_from_dict(read_yaml(text, "p")).train.amp == "off"


def test_a_quoted_number_is_refused_saying_to_write_a_number():
    with pytest.raises(ParamsError, match="is text, not a number; write it without quotes"):
        params_from_dict({"lr": "3e-4"})


@pytest.mark.parametrize("key", ["data.bbox_table", "data.metadata_table", "split.test_list", "weights"])
def test_an_empty_file_param_says_to_write_the_stand_in(key: str):
    section, _, name = key.rpartition(".")
    raw = {section: {name: ""}} if section else {name: ""}
    with pytest.raises(ParamsError, match=rf"{key} is empty.*inputs/none"):
        params_from_dict(raw)


def test_chexnet_check_names_the_empty_path_dvc_would_fail_on(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("data:\n  bbox_table: ''\n")
    result = _cli("check", cwd=tmp_path)
    assert result.returncode == 1 and "data.bbox_table is empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_chexnet_check_passes_the_repos_params_and_refuses_a_bad_layer_and_a_missing_file(tmp_path: Path):
    ok = _cli("check", cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "params.yaml").write_text("explain:\n  target_layer: classifier\n")
    layer = _cli("check", cwd=tmp_path)
    assert layer.returncode == 1 and "target layer 'classifier'" in layer.stderr
    (tmp_path / "params.yaml").write_text("data: {table: own.csv, images: own}\n")  # the demo box table stays
    own = _cli("check", cwd=tmp_path)
    assert own.returncode == 1 and "data.bbox_table" in own.stderr and "your own data" in own.stderr
    (tmp_path / "params.yaml").write_text("split:\n  method: official\n  test_list: lists/test.txt\n")
    missing = _cli("check", cwd=tmp_path)
    assert (
        missing.returncode == 1 and "split.test_list" in missing.stderr and "lists/test.txt" in missing.stderr
    )


# --- the table ----------------------------------------------------------------------------------------
def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:08d}_000.png" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((40, 40), (20 * i) % 256, np.uint8)).save(folder / name)
    return names


def _prepare(tmp_path: Path, table: pd.DataFrame, columns=SEED, **options) -> prepare.PrepareReport:
    return prepare.prepare_cache(
        table, table_path="t.parquet", image_root=tmp_path / "images", out_dir=tmp_path / "prepared",
        columns=columns, image_size=32, subset=100, seed=0, workers=1, max_rejected_fraction=1.0,
        label_options=LabelOptions(**({"min_positives": 1} | options)),
    )  # fmt: skip


def test_one_row_per_image_and_finding_is_merged_with_findings_united(tmp_path: Path):
    names = _images(tmp_path / "images", 4)
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
    names = _images(tmp_path / "images", 2)
    table = pd.DataFrame(
        [(names[0], "Mass", 0), (names[0], "Effusion", 7), (names[1], "Mass", 1)],
        columns=["imagem", "patologia", "paciente_id"],
    )
    with pytest.raises(tables.DataError, match=r"is on rows \[0, 1\].*'patient'"):
        _prepare(tmp_path, table)


def _wide(tmp_path: Path, columns: dict[str, list]) -> tuple[pd.DataFrame, presets_base.Columns]:
    n = len(next(iter(columns.values())))
    names = _images(tmp_path / "images", n)
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
    names = _images(tmp_path / "images", 4)
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
    names = _images(tmp_path / "images", 2)
    table = pd.DataFrame({"imagem": names, "patologia": ["Mass", "No Finding"], "paciente_id": [0, 1]})
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(tables.DataError, match=r"needs 0\.0 GB.*lower image_size"):
        _prepare(tmp_path, table)


# --- DICOM: radiographs only, undecodable files are per-file reasons ---------------------------------
pydicom = pytest.importorskip("pydicom")


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom's test file {name} is not shipped in this version")
    return Path(found)


def _as_dx(source: Path, target: Path) -> Path:
    dataset = pydicom.dcmread(source)
    dataset.Modality = "DX"
    dataset.save_as(target)
    return target


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CT_small.dcm", "not_radiograph"),
        ("MR_small.dcm", "not_radiograph"),
        ("rtdose.dcm", "not_radiograph"),
    ],
)
def test_dicom_that_is_not_a_projection_radiograph_is_refused(name: str, reason: str):
    with pytest.raises(images.ImageReadError, match="is not a projection radiograph") as caught:
        dicom.read_dicom(_testdata(name))
    assert caught.value.reason == reason


def test_multi_frame_and_undecodable_dicom_are_per_file_reasons(tmp_path: Path):
    frames = _as_dx(_testdata("SC_rgb_rle_2frame.dcm"), tmp_path / "frames.dcm")
    # pydicom's JPEG-lossy.dcm (12-bit JPEG Extended) has a misplaced marker that libjpeg refuses: a real
    # file no installed decoder reads
    broken = _as_dx(_testdata("JPEG-lossy.dcm"), tmp_path / "broken.dcm")
    for path, reason in ((frames, "multi_frame"), (broken, "undecodable")):
        result = images.decode_one((0, str(path), 32))
        assert result.pixels is None and result.reason == reason, result
        assert "\n" not in result.detail  # the plugin list in one line


def test_a_dicom_file_without_a_suffix_is_read_as_dicom(tmp_path: Path):
    dataset = pydicom.dcmread(_testdata("CT_small.dcm"))
    dataset.Modality = "CR"
    (tmp_path / "SE0001").mkdir()
    dataset.save_as(tmp_path / "SE0001" / "IM0001")
    assert images.is_dicom(tmp_path / "SE0001" / "IM0001")
    assert images.load_gray(tmp_path / "SE0001" / "IM0001", 32).shape == (32, 32)
    from chexnet.deploy.predict import collect_inputs

    assert collect_inputs([tmp_path]) == [tmp_path / "SE0001" / "IM0001"]


def test_prepare_counts_bad_dicom_among_pngs_and_goes_on(tmp_path: Path):
    names = _images(tmp_path / "images", 4)
    _as_dx(_testdata("JPEG-lossy.dcm"), tmp_path / "images" / "ls.dcm")  # undecodable (above)
    (tmp_path / "images" / "ct.dcm").write_bytes(_testdata("CT_small.dcm").read_bytes())
    table = pd.DataFrame({"imagem": [*names, "ls.dcm", "ct.dcm"], "patologia": ["Mass", "No Finding"] * 3,
                          "paciente_id": range(6)})  # fmt: skip
    report = prepare.prepare_cache(
        table, table_path="t.parquet", image_root=tmp_path / "images", out_dir=tmp_path / "prepared",
        columns=SEED, image_size=32, subset=100, seed=0, workers=2, max_rejected_fraction=1.0,
        label_options=LabelOptions(min_positives=1),
    )  # fmt: skip
    assert report.images_written == 4 and report.rejected == {"undecodable": 1, "not_radiograph": 1}


# --- devices, layers ------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:7", "mps", "tpu"])
def test_a_device_this_machine_lacks_is_refused_in_one_line(name: str):
    with pytest.raises(ChexnetError, match=rf"device '{name}'"):
        resolve_device(name)


@pytest.mark.parametrize("spec", ["nope", "features[99]", "classifier", "classifier[0]", "features..x"])
def test_a_target_layer_that_names_no_spatial_layer_is_refused(spec: str):
    with pytest.raises(LayerError, match="target layer"):
        check_target_layer(CheXNet(3), spec)


# --- the CLI: thresholds that belong to the model, JSON files, folders -------------------------------
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd)  # in this process: the fast loop (tests/conftest.py)


def _cli_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chexnet", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)  # fmt: skip


def test_predict_reads_the_chosen_models_own_thresholds(tmp_path: Path, other_model: Path):
    result = _cli("predict", "x.png", "--model", str(other_model), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["thresholds"]["source"] == str(other_model.parent / "thresholds.json")
    assert document["results"][0]["positives"] == ["Derrame"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            '{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 7.5, "Nódulo": 0.5}}',
            "not probabilities",
        ),
        (
            '{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": "x", "Nódulo": 0.5}}',
            "not probabilities",
        ),
        ('{"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 0.5}}', "are for"),
        ('{"labels": ["Derrame", "Nódulo"], "thresh', "not valid JSON"),
    ],
)
def test_a_damaged_or_out_of_range_thresholds_file_is_refused(
    tmp_path: Path, other_model: Path, content, needle
):
    (other_model.parent / "thresholds.json").write_text(content)
    result = _cli("predict", "x.png", "--model", str(other_model), cwd=tmp_path)
    assert result.returncode == 1 and needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", ['{"labels": ["Derrame", ', '{"image_size": 32}', "[]"])
def test_a_damaged_model_record_is_refused_in_one_line(tmp_path: Path, other_model: Path, content: str):
    other_model.with_suffix(".json").write_text(content)
    result = _cli("predict", "x.png", "--model", str(other_model), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(other_model.with_suffix(".json")) in result.stderr


@pytest.mark.parametrize("command", ["predict-heatmaps", "explain"])
def test_a_bad_layer_or_read_only_folder_is_refused_before_any_inference(tmp_path, other_model, command):
    base = (
        ["predict", "x.png", "--heatmaps"] if command == "predict-heatmaps" else ["explain", "x.png", "--out"]
    )
    layer = _cli(*base, "maps", "--model", str(other_model), "--layer", "nope", cwd=tmp_path)
    assert layer.returncode == 1 and "target layer 'nope'" in layer.stderr and "Traceback" not in layer.stderr
    assert "x.png" not in layer.stderr  # the layer is blamed, not the image
    # a folder that cannot be made or written (here under a file: refused for root too)
    (tmp_path / "blocker").write_text("a file, not a folder")
    ro = _cli(*base, "blocker/maps", "--model", str(other_model), cwd=tmp_path)
    assert ro.returncode == 1 and "cannot be written" in ro.stderr and "Traceback" not in ro.stderr
    assert "blocker/maps" in ro.stderr


def test_a_read_only_output_folder_is_refused_by_the_io_helper(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ChexnetError, match="cannot be written"):
        io.require_writable_dir(blocker / "maps", "--out")


def test_a_failed_write_names_the_output_not_the_temporary(tmp_path: Path, monkeypatch):
    import errno
    import os

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        io.write_text(tmp_path / "out.json", "{}")
    assert caught.value.filename == str(tmp_path / "out.json") and caught.value.errno == errno.ENOSPC


CLI_NAMES_NOTHING = [
    ("predict", ["--model", "nothing/model.pth"]),
    ("predict", ["--labels", "Nothing"]),
    ("predict", ["--device", "cuda:7"]),
    ("predict", ["--image-size", "48"]),  # the model says 32
    ("predict", ["--batch-size", "0"]),
    ("predict", ["--thresholds", "nothing.json"]),
    ("predict", ["--heatmaps", "maps", "--layer", "features[99]"]),
    ("explain", ["--finding", "Nothing"]),
    ("explain", ["--layer", "classifier"]),
    ("explain", ["--device", "mps"]),
    ("check", ["--params", "nothing.yaml"]),
]


@pytest.mark.parametrize(
    ("command", "options"), CLI_NAMES_NOTHING, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_every_cli_option_that_names_nothing_gives_one_line(
    tmp_path: Path, other_model: Path, command, options
):
    inputs = [] if command == "check" else ["x.png", "--model", str(other_model)]
    result = _cli(command, *inputs, *options, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]


# --- training on what is left, and the end of a stage --------------------------------------------------
@pytest.mark.parametrize(
    ("images", "batch", "dropped"), [(17, 8, True), (16, 8, False), (18, 8, False), (1, 8, False)]
)
def test_a_last_training_batch_of_one_image_is_left_out(images: int, batch: int, dropped: bool):
    from torch.utils.data import TensorDataset

    from chexnet.engine.inference import make_loader

    data = TensorDataset(torch.arange(images))
    loader = make_loader(data, batch_size=batch, shuffle=True, seed=0, num_workers=0,
                         device=torch.device("cpu"), drop_single=True)  # fmt: skip
    sizes = [len(b[0]) for b in loader]
    assert (1 not in sizes or images == 1) and (sum(sizes) == images - 1) == dropped
    plain = make_loader(
        data, batch_size=batch, shuffle=False, seed=0, num_workers=0, device=torch.device("cpu")
    )
    assert sum(len(b[0]) for b in plain) == images  # evaluation loaders keep every image


def test_out_of_memory_in_a_stage_is_one_line(tmp_path: Path, monkeypatch):
    from chexnet.pipeline import stage_runner

    def body(_params):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(SystemExit) as stopped:
        stage_runner.run_stage("test", body, sections=())
    assert stopped.value.code == 1


def test_the_card_calls_every_demo_layout_synthetic():
    from chexnet.pipeline.paths import reads_demo

    assert reads_demo("data/demo/CheXpert-v1.0-small/train.csv", "data/demo")
    assert reads_demo("data/demo/mimic-cxr-2.0.0-chexpert.csv", "data/demo")
    assert not reads_demo("/data/chexpert/train.csv", "/data/chexpert")


@pytest.mark.parametrize(
    "bad",
    [
        "data: {preset: padchestt, bbox_table: inputs/none}",
        "{demo: {layout: nih14}, data: {bbox_table: inputs/none}}",
    ],
)
def test_chexnet_check_refuses_a_preset_or_layout_that_names_nothing(tmp_path: Path, bad: str):
    (tmp_path / "params.yaml").write_text(bad)
    result = _cli("check", "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1 and len(errors) == 1 and "must be one of: seed" in errors[0], result.stderr


# --- compressed DICOM, as hospitals export it (pylibjpeg's decoders, requirements.txt) ------------------
@pytest.mark.parametrize(
    ("compressed", "plain"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE Lossless
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS Lossless
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),  # JPEG 2000 Lossless
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),  # JPEG Lossless (Process 14) against RLE, RGB
    ],
)
def test_lossless_compressed_dicom_decodes_to_the_uncompressed_pixels(
    tmp_path: Path, compressed: str, plain: str
):
    """pydicom ships each image compressed and uncompressed: the radiograph chexnet reads from the
    compressed file is the uncompressed one's, pixel for pixel (both read as DX radiographs)."""
    ours = dicom.read_dicom(_as_dx(_testdata(compressed), tmp_path / "c.dcm"))
    reference = dicom.read_dicom(_as_dx(_testdata(plain), tmp_path / "p.dcm"))
    np.testing.assert_array_equal(ours, reference)


def test_lossy_jpeg_dicom_decodes_close_to_its_decompressed_copy(tmp_path: Path):
    """JPEG Baseline (lossy, YBR): pydicom's SC_rgb_jpeg_dcmtk.dcm against the same image losslessly (RLE)."""
    ours = dicom.read_dicom(_as_dx(_testdata("SC_rgb_jpeg_dcmtk.dcm"), tmp_path / "c.dcm"))
    reference = dicom.read_dicom(_as_dx(_testdata("SC_rgb_rle.dcm"), tmp_path / "p.dcm"))
    assert ours.shape == reference.shape and np.abs(ours.astype(int) - reference).mean() < 2.0


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "693_J2KI.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
)
def test_lossy_jpeg_jpeg2000_and_jpeg_ls_decode_in_prepare_predict_and_serve(tmp_path: Path, name: str):
    """JPEG 2000 (16-, 14-bit), near-lossless JPEG-LS (16-bit), JPEG Baseline: the one reader every path uses
    (prepare's decoder, predict, explain, the service: chexnet.data.images.load_gray) reads them."""
    path = _as_dx(_testdata(name), tmp_path / "x.dcm")
    gray = images.load_gray(path, 64)
    assert gray.shape == (64, 64) and gray.dtype == np.uint8 and gray.std() > 1
