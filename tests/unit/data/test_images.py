"""Every input kind (PNG, JPEG, 16-bit, DICOM with its photometric and rescale rules) read to the one gray
image predict, explain, the service and prepare use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from chexnet.data.dicom import read_dicom
from chexnet.data.images import load_gray as read_image
from tests.helpers import dx_dicom

_dicom = dx_dicom  # tests/dicom_files.py


def _gradient():
    return np.tile(np.linspace(0, 4000, 128), (128, 1))


def test_dicom_monochrome2_and_monochrome1_inverted(tmp_path: Path):
    normal = read_dicom(_dicom(tmp_path / "m2.dcm", _gradient()))
    inverted = read_dicom(_dicom(tmp_path / "m1.dcm", _gradient(), photometric="MONOCHROME1"))
    assert normal[0, 0] == 0 and normal[0, -1] == 255
    assert np.array_equal(inverted, 255 - normal)


def test_dicom_rescale_and_window_are_applied(tmp_path: Path):
    # a window of 1000 around 2000 saturates below 1500 and above 2500
    windowed = read_dicom(_dicom(tmp_path / "w.dcm", _gradient(), window=(2000, 1000)))
    assert windowed[0, 0] == 0 and windowed[0, -1] == 255 and windowed[0, 64] not in (0, 255)
    assert (windowed[0] == 0).sum() > 40  # the dark third is clipped by the window
    negative = read_dicom(_dicom(tmp_path / "r.dcm", _gradient(), slope=-1.0, intercept=4000))
    assert negative[0, 0] == 255 and negative[0, -1] == 0  # slope −1 reverses the values


def test_every_input_kind_reads_to_gray(tmp_path: Path):
    base = np.round(np.tile(np.linspace(0, 255, 256), (256, 1))).astype(np.uint8)
    Image.fromarray(base).save(tmp_path / "g8.png")
    Image.fromarray(base.astype(np.uint16) * 16).save(tmp_path / "g16.png")
    Image.fromarray(np.dstack([base] * 3 + [np.full_like(base, 255)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(base).convert("RGB").save(tmp_path / "rgb.jpg", quality=95)
    reference = read_image(tmp_path / "g8.png", 64).astype(int)
    for name in ["g16.png", "rgba.png", "rgb.jpg"]:
        assert np.abs(read_image(tmp_path / name, 64).astype(int) - reference).max() <= 4, name
