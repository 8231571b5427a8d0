"""Limits on what is decoded: they check what a file really holds, not what its header claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chexnet.data.dicom import read_dicom
from chexnet.data.images import ImageReadError, OpenedImage, load_gray, scale_to_uint8
from tests.helpers import TEST_MODEL_SIZE, claim_size, dx_dicom, gray_jpeg, jpeg_dx_dicom, png_file


def test_a_dicom_whose_codestream_is_a_bomb_is_refused_before_decoding(tmp_path: Path):
    bomb = jpeg_dx_dicom(tmp_path / "bomb.dcm", claim_size(gray_jpeg(64), 20000, 20000), 64, 64)
    with pytest.raises(ImageReadError, match="codestream: 400,000,000 pixels") as caught:
        read_dicom(bomb)
    assert caught.value.reason == "too_large"
    lying = jpeg_dx_dicom(tmp_path / "lying.dcm", gray_jpeg(128), 64, 64)
    with pytest.raises(ImageReadError, match="codestream is 128 × 128 pixels but its header says 64 × 64"):
        read_dicom(lying)
    assert read_dicom(jpeg_dx_dicom(tmp_path / "fine.dcm", gray_jpeg(64), 64, 64)).shape == (64, 64)


def test_two_frames_of_pixel_data_without_number_of_frames_is_said_so(tmp_path: Path):
    import pydicom

    path = dx_dicom(tmp_path / "two.dcm", np.zeros((64, 64)))
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData * 2
    dataset.save_as(path)
    with pytest.raises(ImageReadError, match="2 frames' worth") as caught:
        read_dicom(path)
    assert caught.value.reason == "multi_frame"


def test_a_truncated_dicom_is_called_truncated(tmp_path: Path):
    path = dx_dicom(tmp_path / "whole.dcm", np.tile(np.arange(64), (64, 1)))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(ImageReadError, match="truncated") as caught:
        read_dicom(cut)
    assert caught.value.reason == "truncated"


def test_the_pixel_limit_holds_for_every_reader(tmp_path: Path):
    png = png_file(tmp_path / "big.png", side=300)
    with OpenedImage(png) as opened:  # the header's count, before any decode (what the service reserves)
        assert opened.pixels == 90_000
    with pytest.raises(ImageReadError, match="90,000 pixels"):
        load_gray(png, TEST_MODEL_SIZE, max_pixels=80_000)
    with pytest.raises(ImageReadError, match="90,000 pixels"):
        OpenedImage(png, max_pixels=80_000)


def test_16_bit_scaling_in_place_gives_the_same_pixels_as_the_formula():
    values = np.random.default_rng(0).integers(0, 4096, (300, 200)).astype(np.uint16)
    low, high = float(values.min()), float(values.max())
    expected = np.round((values.astype(np.float64) - low) * (255.0 / (high - low))).astype(np.uint8)
    assert np.array_equal(scale_to_uint8(values), expected)
