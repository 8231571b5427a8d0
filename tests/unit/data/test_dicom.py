"""DICOM in: projection radiographs only, per-file reasons for what cannot be decoded, and compressed
transfer syntaxes as hospitals export them (pylibjpeg's decoders, requirements.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexnet.core.labels import LabelOptions
from chexnet.data import dicom, images, prepare
from chexnet.data.presets import registry
from tests.helpers import as_radiograph, nih_named_pngs, pydicom_sample

SEED = registry.resolve_columns("seed", "", "", "")


# --- the table ----------------------------------------------------------------------------------------
# --- DICOM: radiographs only, undecodable files are per-file reasons ---------------------------------
pydicom = pytest.importorskip("pydicom")


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
        dicom.read_dicom(pydicom_sample(name))
    assert caught.value.reason == reason


def test_multi_frame_and_undecodable_dicom_are_per_file_reasons(tmp_path: Path):
    frames = as_radiograph(pydicom_sample("SC_rgb_rle_2frame.dcm"), tmp_path / "frames.dcm")
    # pydicom's JPEG-lossy.dcm (12-bit JPEG Extended) has a misplaced marker that libjpeg refuses: a real
    # file no installed decoder reads
    broken = as_radiograph(pydicom_sample("JPEG-lossy.dcm"), tmp_path / "broken.dcm")
    for path, reason in ((frames, "multi_frame"), (broken, "undecodable")):
        result = images.decode_one((0, str(path), 32))
        assert result.pixels is None and result.reason == reason, result
        assert "\n" not in result.detail  # the plugin list in one line


def test_a_dicom_file_without_a_suffix_is_read_as_dicom(tmp_path: Path):
    dataset = pydicom.dcmread(pydicom_sample("CT_small.dcm"))
    dataset.Modality = "CR"
    (tmp_path / "SE0001").mkdir()
    dataset.save_as(tmp_path / "SE0001" / "IM0001")
    assert images.is_dicom(tmp_path / "SE0001" / "IM0001")
    assert images.load_gray(tmp_path / "SE0001" / "IM0001", 32).shape == (32, 32)
    from chexnet.deploy.predict import collect_inputs

    assert collect_inputs([tmp_path]) == [tmp_path / "SE0001" / "IM0001"]


def test_prepare_counts_bad_dicom_among_pngs_and_goes_on(tmp_path: Path):
    names = nih_named_pngs(tmp_path / "images", 4)
    as_radiograph(pydicom_sample("JPEG-lossy.dcm"), tmp_path / "images" / "ls.dcm")  # undecodable (above)
    (tmp_path / "images" / "ct.dcm").write_bytes(pydicom_sample("CT_small.dcm").read_bytes())
    table = pd.DataFrame({"imagem": [*names, "ls.dcm", "ct.dcm"], "patologia": ["Mass", "No Finding"] * 3,
                          "paciente_id": range(6)})  # fmt: skip
    report = prepare.prepare_cache(
        table, table_path="t.parquet", image_root=tmp_path / "images", out_dir=tmp_path / "prepared",
        columns=SEED, image_size=32, subset=100, seed=0, workers=2, max_rejected_fraction=1.0,
        label_options=LabelOptions(min_positives=1),
    )  # fmt: skip
    assert report.images_written == 4 and report.rejected == {"undecodable": 1, "not_radiograph": 1}


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
    ours = dicom.read_dicom(as_radiograph(pydicom_sample(compressed), tmp_path / "c.dcm"))
    reference = dicom.read_dicom(as_radiograph(pydicom_sample(plain), tmp_path / "p.dcm"))
    np.testing.assert_array_equal(ours, reference)


def test_lossy_jpeg_dicom_decodes_close_to_its_decompressed_copy(tmp_path: Path):
    """JPEG Baseline (lossy, YBR): pydicom's SC_rgb_jpeg_dcmtk.dcm against the same image losslessly (RLE)."""
    ours = dicom.read_dicom(as_radiograph(pydicom_sample("SC_rgb_jpeg_dcmtk.dcm"), tmp_path / "c.dcm"))
    reference = dicom.read_dicom(as_radiograph(pydicom_sample("SC_rgb_rle.dcm"), tmp_path / "p.dcm"))
    assert ours.shape == reference.shape and np.abs(ours.astype(int) - reference).mean() < 2.0


@pytest.mark.parametrize(
    "name", ["JPEG2000.dcm", "693_J2KI.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
)
def test_lossy_jpeg_jpeg2000_and_jpeg_ls_decode_in_prepare_predict_and_serve(tmp_path: Path, name: str):
    """JPEG 2000 (16-, 14-bit), near-lossless JPEG-LS (16-bit), JPEG Baseline: the one reader every path uses
    (prepare's decoder, predict, explain, the service: chexnet.data.images.load_gray) reads them."""
    path = as_radiograph(pydicom_sample(name), tmp_path / "x.dcm")
    gray = images.load_gray(path, 64)
    assert gray.shape == (64, 64) and gray.dtype == np.uint8 and gray.std() > 1
