from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexnet import data
from chexnet.labels import LABELS


def _gradient(size=64):
    return np.tile(np.linspace(0, 255, size, dtype=np.float64), (size, 1))


def test_every_pixel_format_decodes_to_the_same_gray(tmp_path: Path):
    gray = np.round(_gradient()).astype(np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    Image.fromarray(gray, "L").convert("RGB").save(tmp_path / "rgb.png")
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png")
    # 12-bit values in a 16-bit container: must be scaled by the real range, not clipped to 255.
    Image.fromarray(np.round(_gradient() / 255 * 4095).astype(np.uint16)).save(tmp_path / "g16.png")
    reference = data.load_gray(tmp_path / "l.png", 64)
    for name in ["rgb", "rgba", "p", "g16"]:
        decoded = data.load_gray(tmp_path / f"{name}.png", 64)
        assert decoded.dtype == np.uint8 and decoded.shape == (64, 64)
        assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 2, name
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")


def test_resize_is_antialiased(tmp_path: Path):
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: naive subsampling gives all-black or all-white
    Image.fromarray(stripes).save(tmp_path / "s.png")
    small = data.load_gray(tmp_path / "s.png", 32)
    assert 100 < small.mean() < 155 and small.std() < 20


def test_paths_cannot_leave_the_image_folder(tmp_path: Path):
    assert data.image_path(tmp_path, "a/b.png") == (tmp_path / "a/b.png").resolve()
    assert data.image_path(tmp_path, "/etc/passwd") is None
    assert data.image_path(tmp_path, "../outside.png") is None
    assert data.image_path(tmp_path, "a/../../outside.png") is None


def _table_with_images(tmp_path: Path) -> pd.DataFrame:
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(6):
        name = f"0000000{i}_000.png"
        Image.fromarray(np.full((40, 40), 20 * i, np.uint8)).save(images / name)
        rows.append({"imagem": name, "patologia": "Mass" if i % 2 else "No Finding", "paciente_id": i})
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows += [
        {"imagem": "missing.png", "patologia": "Nodule", "paciente_id": 7},
        {"imagem": "broken.png", "patologia": "Nodule", "paciente_id": 8},
        {"imagem": "../escape.png", "patologia": "Nodule", "paciente_id": 9},
        {"imagem": "00000001_000.png", "patologia": "Mass", "paciente_id": 1},  # duplicate row
        {"imagem": "00000009_000.png", "patologia": None, "paciente_id": 10},  # empty label
    ]
    return pd.DataFrame(rows)


def test_prepare_cache_writes_contract_and_counts_rejects(tmp_path: Path):
    table = _table_with_images(tmp_path)
    out = tmp_path / "prepared"
    report = data.prepare_cache(
        table,
        table_path="t.parquet",
        image_root=tmp_path / "images",
        out_dir=out,
        image_column="imagem",
        label_column="patologia",
        patient_column="paciente_id",
        image_size=32,
        subset=100,
        seed=0,
    )
    assert report.rows_in_table == 11 and report.duplicates_dropped == 1
    assert report.rejected == {"missing_file": 1, "unreadable": 1, "unsafe_path": 1, "empty_label": 1}
    assert report.images_written == 6
    images = np.load(out / data.IMAGES_FILE, mmap_mode="r")
    assert images.shape == (6, 32, 32) and images.dtype == np.uint8
    index = data.load_index(out)
    assert list(index.columns) == ["row", "image", "patient", *LABELS]
    assert index["Mass"].sum() == 3
    # every row of the cache holds the image the index names
    for row in index.itertuples():
        expected = 20 * int(row.image[:8])
        assert abs(int(images[row.row].mean()) - expected) <= 1
    rejects = pd.read_csv(out / data.REJECTS_FILE)
    assert set(rejects["reason"]) == {"missing_file", "unreadable", "unsafe_path", "empty_label"}
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_subset_is_seeded(tmp_path: Path):
    table = _table_with_images(tmp_path).iloc[:6]
    kwargs = dict(
        table_path="t",
        image_root=tmp_path / "images",
        image_column="imagem",
        label_column="patologia",
        patient_column="paciente_id",
        image_size=16,
        subset=3,
    )
    data.prepare_cache(table, out_dir=tmp_path / "a", seed=1, **kwargs)
    data.prepare_cache(table, out_dir=tmp_path / "b", seed=1, **kwargs)
    data.prepare_cache(table, out_dir=tmp_path / "c", seed=2, **kwargs)
    a, b, c = (list(data.load_index(tmp_path / x)["image"]) for x in "abc")
    assert a == b and len(a) == 3 and a != c


def test_missing_column_lists_the_columns_present(tmp_path: Path):
    table = pd.DataFrame({"imagem": ["a.png"], "Finding Labels": ["Mass"], "paciente_id": [1]})
    with pytest.raises(data.DataError, match=r"no column 'patologia'.*data.label_column.*'Finding Labels'"):
        data.prepare_cache(
            table,
            table_path="t.parquet",
            image_root=tmp_path,
            out_dir=tmp_path / "o",
            image_column="imagem",
            label_column="patologia",
            patient_column="paciente_id",
            image_size=16,
            subset=10,
            seed=0,
        )


def test_normalize_batch_matches_the_seeds_transform():
    from torchvision import transforms

    gray = np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)
    seed_style = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)]
    )
    expected = seed_style(Image.fromarray(gray).convert("RGB"))
    ours = data.normalize_batch(torch.from_numpy(gray)[None, None], "cpu")[0]
    assert torch.allclose(ours, expected, atol=1e-6)
