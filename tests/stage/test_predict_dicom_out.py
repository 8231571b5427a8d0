"""``chexnet predict --dicom-out`` in process: for each DICOM input, a Structured Report whose findings,
probabilities and positives are the ``--json`` answer's, and a heat-map Secondary Capture per positive
finding, both in the input's study; a PNG input gets none, and says nothing is missing."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.helpers import as_radiograph, demo_radiograph, pydicom_sample, run_cli


@pytest.mark.parametrize("sample", ["CT_small.dcm", "JPEG2000.dcm", "demo, RLE"])
def test_dicom_out_writes_the_json_answer_as_a_report_and_heat_maps(
    tmp_path: Path, other_model: Path, sample
):
    if sample.startswith("demo"):
        image = demo_radiograph(tmp_path / "x.dcm", compressed=True)
    else:
        image = as_radiograph(pydicom_sample(sample), tmp_path / "x.dcm")
    out = tmp_path / "results"
    result = run_cli("predict", str(image), str(tmp_path / "x.png"), "--model", str(other_model), "--json",
                     "--dicom-out", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = {Path(a["file"]).name: a for a in json.loads(result.stdout)["results"]}
    answer = answers["x.dcm"]
    assert answer["positives"] == ["Derrame"]  # its thresholds: Derrame 0.0, Nódulo 1.0
    assert set(answer["dicom"]) == {"sr", "sc:Derrame"} and "dicom" not in answers["x.png"]
    report = hd.sr.ComprehensiveSR.from_dataset(pydicom.dcmread(answer["dicom"]["sr"]))
    group = report.content.get_image_measurement_groups()[0]
    probabilities = {
        m.name.meaning: m.value for m in group.get_measurements() if "Threshold" not in m.name.meaning
    }
    assert probabilities == pytest.approx(answer["probabilities"])
    calls = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
    assert calls == {"Derrame": "Present", "Nódulo": "Absent"}
    capture = pydicom.dcmread(answer["dicom"]["sc:Derrame"])
    source = pydicom.dcmread(image)
    assert report.StudyInstanceUID == capture.StudyInstanceUID == source.StudyInstanceUID
    assert len({report.SeriesInstanceUID, capture.SeriesInstanceUID, source.SeriesInstanceUID}) == 3
    assert str(source.PatientName) not in result.stderr  # no patient data in the logs
