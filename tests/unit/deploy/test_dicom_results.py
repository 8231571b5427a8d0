"""A prediction as DICOM objects in the source's study (#34): the TID 1500 Structured Report read back
with highdicom says the findings, probabilities, thresholds and positives it was given, names the model
by the sha256 of its weights, and says it is not for diagnostic use; the heat-map Secondary Capture
shows the overlay under a burned-in label. Both carry new UIDs in the source's study and patient, on
pydicom's own sample images rewritten as radiographs (a compressed one among them)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from chexnet.deploy import dicom_results
from chexnet.deploy.dicom_results import ModelIdentity, heat_map_capture, structured_report
from tests.helpers import as_radiograph, pydicom_sample

MODEL = ModelIdentity("chexnet_model", "0123456789abcdef" * 4)
PROBABILITIES = {"Effusion": 0.81, "Atelectasis": 0.12, "Nódulo": 0.5}
THRESHOLDS = {"Effusion": 0.5, "Atelectasis": 0.3, "Nódulo": 0.5}
PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


@pytest.fixture(params=["CT_small.dcm", "JPEG2000.dcm"])
def source(request, tmp_path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(as_radiograph(pydicom_sample(request.param), tmp_path / "source.dcm"))


def _text_items(dataset) -> list[str]:
    found = []
    for item in dataset.get("ContentSequence", []):
        if item.get("TextValue"):
            found.append(str(item.TextValue))
        found += _text_items(item)
    return found


def test_the_report_says_what_the_model_said_in_the_source_study(source, tmp_path: Path):
    report = structured_report(source, PROBABILITIES, THRESHOLDS, MODEL)
    report.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    back = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(tmp_path / "sr.dcm"))
    group = back.content.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Pleural effusion"] == pytest.approx(0.81) and values["Atelectasis"] == pytest.approx(0.12)
    assert values["Threshold for Effusion"] == pytest.approx(0.5)
    calls = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
    assert calls == {"Pleural effusion": "Present", "Atelectasis": "Absent", "Nódulo": "Present"}  # 0.5 ≥ 0.5
    codes = {m.name.meaning: (m.name.scheme_designator, m.name.value) for m in group.get_measurements()}
    assert codes["Pleural effusion"] == ("SCT", "60046008")  # DICOM PS3.16's code
    assert codes["Atelectasis"][0] == dicom_results.PRIVATE_SCHEME  # none there: the private scheme
    assert f"sha256={MODEL.sha256}" in _text_items(back)
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert all(str(back.get(k)) == str(source.get(k)) for k in PATIENT)
    assert back.SeriesInstanceUID != source.SeriesInstanceUID and back.SOPInstanceUID != source.SOPInstanceUID
    assert "NOT FOR DIAGNOSTIC USE" in back.SeriesDescription
    assert back.CompletionFlag == "COMPLETE" and back.VerificationFlag == "UNVERIFIED"
    assert back.SpecificCharacterSet == "ISO_IR 192"  # UTF-8: "Nódulo" and any other finding name


def test_the_heat_map_capture_shows_the_overlay_under_its_label(source, tmp_path: Path):
    overlay = np.zeros((64, 80, 3), np.uint8)
    overlay[20:40, 30:50] = (255, 0, 0)
    capture = heat_map_capture(source, overlay, "Effusion", 0.81, MODEL)
    capture.save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "sc.dcm")
    pixels = back.pixel_array
    band = pixels.shape[0] - overlay.shape[0]
    np.testing.assert_array_equal(pixels[band:], overlay)  # the overlay, untouched, under the label
    assert pixels[:band].max() > 200  # the label, burned in (white on black)
    assert back.BurnedInAnnotation == "YES" and back.PhotometricInterpretation == "RGB"
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert all(str(back.get(k)) == str(source.get(k)) for k in PATIENT)
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert "NOT FOR DIAGNOSTIC USE" in back.SeriesDescription and MODEL.sha256[:16] in back.ImageComments
