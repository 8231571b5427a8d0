from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexnet.core.labels import LabelOptions, UnknownLabelError
from chexnet.data import cache, dataset, findings, images, prepare, tables
from chexnet.data.presets import base as presets_base
from chexnet.data.presets import registry

SEED = registry.resolve_columns("seed", "", "", "")


def _gradient(size=64):
    return np.tile(np.linspace(0, 255, size, dtype=np.float64), (size, 1))


# --- decoding ---------------------------------------------------------------------------------------
def test_every_pixel_format_decodes_to_the_same_gray(tmp_path: Path):
    gray = np.round(_gradient()).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    Image.fromarray(gray, "L").convert("RGB").save(tmp_path / "rgb.png")
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png")
    # 12-bit values in a 16-bit container: must be scaled by the real range, not clipped to 255.
    Image.fromarray(np.round(_gradient() / 255 * 4095).astype(np.uint16)).save(tmp_path / "g16.png")
    reference = images.load_gray(tmp_path / "l.png", 64)
    for name in ["rgb", "rgba", "p", "g16"]:
        decoded = images.load_gray(tmp_path / f"{name}.png", 64)
        assert decoded.dtype == np.uint8 and decoded.shape == (64, 64)
        assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 2, name
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")


def test_full_range_16_bit_does_not_wrap(tmp_path: Path):
    values = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    decoded = images.load_gray(tmp_path / "g16.png", 64).astype(int)
    assert decoded[0, 0] == 0 and decoded[-1, -1] == 255
    assert (np.diff(decoded.ravel()) >= 0).all()  # monotonic: nothing wrapped around


def test_resize_is_antialiased(tmp_path: Path):
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: naive subsampling gives all-black or all-white
    Image.fromarray(stripes).save(tmp_path / "s.png")
    small = images.load_gray(tmp_path / "s.png", 32)
    assert 100 < small.mean() < 155 and small.std() < 20


# --- finding files ----------------------------------------------------------------------------------
def test_paths_cannot_leave_the_image_folder(tmp_path: Path):
    assert images.safe_join(tmp_path, "a/b.png") == (tmp_path / "a/b.png").resolve()
    assert images.safe_join(tmp_path, "/etc/passwd") is None
    assert images.safe_join(tmp_path, "../outside.png") is None
    assert images.safe_join(tmp_path, "a/../../outside.png") is None


def test_recursive_index_finds_nih_subfolders_and_rejects_twins(tmp_path: Path):
    for folder, name in [
        ("images_001/images", "00000001_000.png"),
        ("images_012/images", "00030805_000.png"),
    ]:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / name).write_bytes(b"x")
    found = images.index_images(tmp_path)
    assert found["00030805_000.png"] == tmp_path / "images_012/images/00030805_000.png"
    assert (
        images.resolve(tmp_path, "00000001_000.png", found)[0]
        == tmp_path / "images_001/images/00000001_000.png"
    )
    assert images.resolve(tmp_path, "images_001/images/00000001_000.png", found)[0] is not None
    assert images.resolve(tmp_path, "nope.png", found) == (None, "missing_file")
    (tmp_path / "images_002").mkdir()
    (tmp_path / "images_002/00000001_000.png").write_bytes(b"y")
    twins = images.index_images(tmp_path)  # indexing is fine; naming the twin bare is not
    with pytest.raises(images.ImageIndexError, match=r"images_001.*images_002|images_002.*images_001"):
        images.resolve(tmp_path, "00000001_000.png", twins)
    assert images.resolve(tmp_path, "images_002/00000001_000.png", twins)[0] is not None


# --- tables and columns -----------------------------------------------------------------------------
def test_presets_and_overrides():
    nih = registry.resolve_columns("nih", "", "", "")
    assert (nih.image, nih.label, nih.patient) == ("Image Index", "Finding Labels", "Patient ID")
    assert registry.resolve_columns("seed", "", "", "").label == "patologia"
    assert registry.resolve_columns("seed", "file", "", "none") == presets_base.Columns(
        "file", "patologia", None, groups=(("sex", "sexo"), ("age", "idade"), ("view", "incidencia"))
    )
    with pytest.raises(tables.DataError, match=r"data\.preset"):
        registry.resolve_columns("openi", "", "", "")
    assert registry.resolve_columns("chexpert", "", "", "").label is None  # wide: one column per finding


def test_csv_with_empty_trailing_column_parses(tmp_path: Path):
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("Image Index,Finding Labels,Patient ID,\n00000001_000.png,Cardiomegaly,1,\n")
    table = tables.read_table(path)
    assert list(table.columns) == ["Image Index", "Finding Labels", "Patient ID"]


def test_real_nih_v2020_table_parses_and_binarises(nih_dir: Path):
    table = tables.read_table(nih_dir / "Data_Entry_2017_v2020.csv.gz")
    assert len(table) == 112_120 and table["Patient ID"].nunique() == 30_805
    _, counts, _ = findings.long_findings(table["Finding Labels"], LabelOptions())
    assert counts["Infiltration"] == 19_894 and counts["Hernia"] == 227 and len(counts) == 14


def test_patient_ids_from_nih_file_names():
    names = pd.Series(["00000001_000.png", "00030805_012.png"])
    assert list(tables.patients_from_file_names(names, "t")) == ["1", "30805"]
    with pytest.raises(tables.DataError, match="patient column"):
        tables.patients_from_file_names(pd.Series(["scan-7.png"]), "t")


# --- prepare: the cache and bad input ---------------------------------------------------------------
def _write(folder: Path, name: str, value: int, size: int = 40) -> None:
    Image.fromarray(np.full((size, size), value, np.uint8)).save(folder / name)


def _good_table(tmp_path: Path, n: int = 6) -> pd.DataFrame:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        name = f"{i:08d}_000.png"
        _write(folder, name, (20 * i) % 256)
        rows.append({"imagem": name, "patologia": "Mass" if i % 2 else "No Finding", "paciente_id": i})
    return pd.DataFrame(rows)


def _prepare(tmp_path: Path, table: pd.DataFrame, **overrides) -> prepare.PrepareReport:
    kwargs = dict(
        table_path="t.parquet",
        image_root=tmp_path / "images",
        out_dir=tmp_path / "prepared",
        columns=SEED,
        image_size=32,
        subset=100,
        seed=0,
        workers=1,
        max_rejected_fraction=1.0,
        label_options=LabelOptions(min_positives=1),
    )
    kwargs.update(overrides)
    return prepare.prepare_cache(table, **kwargs)


def test_prepare_cache_writes_the_contract(tmp_path: Path):
    report = _prepare(tmp_path, _good_table(tmp_path))
    assert report.images_written == 6 and report.rejected == {}
    stack = cache.load_images(tmp_path / "prepared")
    assert stack.shape == (6, 32, 32) and stack.dtype == np.uint8
    index = cache.load_index(tmp_path / "prepared")
    assert list(index.columns) == ["row", "image", "patient", "width", "height", "Mass"]  # from the data
    assert (index["width"] == 40).all() and (index["height"] == 40).all()  # the originals, before resizing
    assert index["Mass"].sum() == 3
    for row in index.itertuples():  # every cache row holds the image the index names
        assert abs(int(stack[row.row].mean()) - 20 * int(row.image[:8])) <= 1
    assert not list((tmp_path / "prepared").glob(".*tmp"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("missing_file", lambda folder: None),
        ("empty_file", lambda folder: (folder / "bad.png").write_bytes(b"")),
        (
            "truncated",
            lambda folder: (folder / "bad.png").write_bytes((folder / "00000001_000.png").read_bytes()[:-40]),
        ),
        ("unreadable", lambda folder: (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)),
        ("unreadable", lambda folder: (folder / "bad.png").write_text("this is a text file, not an image")),
    ],
    ids=["missing", "empty", "truncated", "corrupt", "not-an-image"],
)
def test_bad_image_files_are_counted_skips(tmp_path: Path, reason: str, make):
    table = _good_table(tmp_path)
    big = np.random.default_rng(0).integers(
        0, 256, (300, 300), dtype=np.uint8
    )  # big enough to truncate mid-data
    Image.fromarray(big).save(tmp_path / "images" / "00000001_000.png")
    make(tmp_path / "images")
    table = pd.concat(
        [table, pd.DataFrame([{"imagem": "bad.png", "patologia": "Nodule", "paciente_id": 99}])]
    )
    report = _prepare(tmp_path, table)
    assert report.rejected == {reason: 1} and report.images_written == 6
    rejects = pd.read_csv(tmp_path / "prepared" / cache.REJECTS_FILE)
    assert list(rejects["image"]) == ["bad.png"] and list(rejects["table_row"]) == [6]


@pytest.mark.parametrize("entry", ["/etc/passwd", "../escape.png", "sub/../../escape.png"])
def test_paths_outside_the_image_folder_are_rejected(tmp_path: Path, entry: str):
    _write(tmp_path, "escape.png", 7)  # it exists, outside the image folder: rejected as unsafe, not missing
    table = pd.concat(
        [_good_table(tmp_path), pd.DataFrame([{"imagem": entry, "patologia": "Mass", "paciente_id": 9}])]
    )
    report = _prepare(tmp_path, table)
    assert report.rejected == {"unsafe_path": 1}


def test_empty_label_cells_are_counted_rejects(tmp_path: Path):
    table = _good_table(tmp_path)
    table.loc[1, "patologia"] = None
    table.loc[2, "patologia"] = "  "
    report = _prepare(tmp_path, table)
    assert report.rejected == {"empty_label": 2} and report.images_written == 4


def test_duplicate_rows_are_kept_once_and_counted(tmp_path: Path):
    table = _good_table(tmp_path)
    table = pd.concat([table, table.iloc[[0, 3]]])
    report = _prepare(tmp_path, table)
    assert report.duplicate_rows_merged == 2 and report.images_written == 6


def test_unknown_label_stops_prepare(tmp_path: Path):
    table = _good_table(tmp_path)
    table.loc[0, "patologia"] = "Efusion"
    with pytest.raises(UnknownLabelError, match="'Efusion' ×1"):
        _prepare(tmp_path, table, label_options=LabelOptions(spec="nih14", min_positives=1, drop_rare=True))


def test_missing_column_lists_the_columns_present(tmp_path: Path):
    table = _good_table(tmp_path).rename(columns={"patologia": "Finding Labels"})
    with pytest.raises(tables.DataError, match=r"no column 'patologia'.*data.label_column.*'Finding Labels'"):
        _prepare(tmp_path, table)


def test_too_many_rejects_fail_with_a_clear_message(tmp_path: Path):
    table = _good_table(tmp_path)
    table.loc[0, "imagem"] = "gone.png"
    with pytest.raises(tables.DataError, match=r"1 of 6 selected images \(16.7%\).*max_rejected_fraction"):
        _prepare(tmp_path, table, max_rejected_fraction=0.1)
    assert (tmp_path / "prepared" / cache.REJECTS_FILE).exists()  # written before failing, for inspection
    assert _prepare(tmp_path, table, max_rejected_fraction=0.2).rejected == {"missing_file": 1}


def test_subset_is_seeded(tmp_path: Path):
    table = _good_table(tmp_path)
    picks = []
    for out, seed in [("a", 1), ("b", 1), ("c", 2)]:
        _prepare(tmp_path, table, out_dir=tmp_path / out, seed=seed, subset=3)
        picks.append(list(cache.load_index(tmp_path / out)["image"]))
    assert picks[0] == picks[1] and len(picks[0]) == 3 and picks[0] != picks[2]


def test_parallel_decoding_writes_the_same_cache(tmp_path: Path):
    table = _good_table(tmp_path, n=40)
    (tmp_path / "images" / "00000003_000.png").write_bytes(b"")  # a reject in the middle keeps rows aligned
    _prepare(tmp_path, table, out_dir=tmp_path / "serial", workers=1)
    _prepare(tmp_path, table, out_dir=tmp_path / "parallel", workers=2)
    serial = np.load(tmp_path / "serial" / cache.IMAGES_FILE)
    parallel = np.load(tmp_path / "parallel" / cache.IMAGES_FILE)
    assert serial.shape == (39, 32, 32) and np.array_equal(serial, parallel)
    assert cache.load_index(tmp_path / "serial").equals(cache.load_index(tmp_path / "parallel"))


def test_patient_ids_from_file_names_when_no_patient_column(tmp_path: Path):
    table = _good_table(tmp_path).drop(columns=["paciente_id"])
    _prepare(tmp_path, table, columns=registry.resolve_columns("seed", "", "", "none"))
    assert list(cache.load_index(tmp_path / "prepared")["patient"]) == [str(i) for i in range(6)]


def test_normalize_batch_matches_the_seeds_transform():
    from torchvision import transforms

    gray = np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)
    seed_style = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(dataset.IMAGENET_MEAN, dataset.IMAGENET_STD)]
    )
    expected = seed_style(Image.fromarray(gray).convert("RGB"))
    ours = dataset.normalize_batch(torch.from_numpy(gray)[None, None], "cpu")[0]
    assert torch.allclose(ours, expected, atol=1e-6)
    nhwc = dataset.normalize_batch(torch.from_numpy(gray)[None, None], "cpu", channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc[0], ours)


def test_a_preset_name_that_names_nothing_lists_every_preset_and_what_it_reads():
    with pytest.raises(
        tables.DataError, match=r"params: data\.preset must be one of: seed \(.+\); nih \(.+got 'nih14'"
    ):
        registry.get("nih14")
    assert list(registry.PRESETS) == [
        "seed", "nih", "chexpert", "mimic", "padchest", "vindr", "rsna", "google_nih"
    ]  # fmt: skip
    assert all(preset.notes for preset in registry.PRESETS.values())
