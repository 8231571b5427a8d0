"""chexnet as a node of a real PACS: a private Orthanc on loopback (its own config and storage folder,
free ports, stopped at the end; skipped where Debian's ``orthanc`` is not installed, ``.ci/run``
installs it where it can) sends a radiograph to ``chexnet listen``; the Structured Report and the
heat-map Secondary Capture come back into the same study, read back over DICOMweb (WADO-RS) say what
``chexnet predict --json`` says for the same file; the same with results sent by STOW-RS; and a CT sent
by Orthanc fails alone with its status."""

from __future__ import annotations

import email.parser
import email.policy
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.helpers import (
    SC_CLASS,
    SR_CLASS,
    as_radiograph,
    c_echo,
    free_port,
    process_env,
    pydicom_sample,
    run_cli,
)

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = pytest.mark.skipif(
    ORTHANC is None or not DICOMWEB_PLUGIN.exists(),  # results are read back over DICOMweb
    reason="Orthanc and its DICOMweb plug-in are not installed (apt-get install orthanc orthanc-dicomweb)",
)


def _http(
    method: str, url: str, data: bytes | None = None, accept: str | None = None
) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Accept": accept} if accept else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), ""


class Orthanc:
    """A private Orthanc: its own configuration, storage and ports; ``chexnet`` is its modality."""

    def __init__(self, root: Path, node_port: int):
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "chexnet-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"chexnet": ["CHEXNET", "127.0.0.1", node_port]},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.url = f"http://127.0.0.1:{self.http_port}"
        with open(root / "orthanc.log", "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=subprocess.DEVNULL,
                                            stderr=log)  # fmt: skip
        _wait_for(lambda: _http("GET", f"{self.url}/system")[0] == 200, "Orthanc's REST API", self.process)

    def upload(self, path: Path) -> dict:
        status, body, _ = _http("POST", f"{self.url}/instances", path.read_bytes())
        assert status == 200, body
        return json.loads(body)

    def send_to_chexnet(self, instance: str) -> tuple[int, bytes]:
        status, body, _ = _http("POST", f"{self.url}/modalities/chexnet/store", json.dumps(instance).encode())
        return status, body

    def instances_of(self, study: str) -> list[dict]:
        return json.loads(_http("GET", f"{self.url}/studies/{study}/instances?expand")[1])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _wait_for(ready, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process ended with {process.returncode}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} not ready within {timeout} s")


def _listen(model: Path, port: int, send_to: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "chexnet", "listen", "--model", str(model), "--port", str(port),
               "--send-to", send_to, "--engine", "torch", "--device", "cpu"]  # fmt: skip
    with open(log, "w") as errors:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, env=process_env(), stdout=subprocess.DEVNULL, stderr=errors)
    _wait_for(lambda: c_echo(port) == 0, "chexnet listen", process, timeout=120)
    return process


def _wado(orthanc: Orthanc, instance: dict) -> pydicom.Dataset:
    """One instance read back over DICOMweb (WADO-RS, multipart/related), found by its UIDs."""
    tags = json.loads(_http("GET", f"{orthanc.url}/instances/{instance['ID']}/tags?simplify")[1])
    url = (f"{orthanc.url}/dicom-web/studies/{tags['StudyInstanceUID']}/series/{tags['SeriesInstanceUID']}"
           f"/instances/{tags['SOPInstanceUID']}")  # fmt: skip
    status, body, kind = _http("GET", url, accept='multipart/related; type="application/dicom"')
    assert status == 200, body[:300]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + body
    )
    part = next(iter(message.iter_parts()))
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(part.get_payload(decode=True)))


def _results_in(orthanc: Orthanc, study: str, expected: int) -> list[dict]:
    found: list[dict] = []

    def arrived() -> bool:
        found[:] = orthanc.instances_of(study)
        return len(found) >= expected

    _wait_for(arrived, f"{expected} instances in the study", orthanc.process, timeout=180)
    return found


def _check_results(orthanc: Orthanc, study: dict, source: Path, model: Path) -> None:
    # what chexnet predict --json says for the same file (in this process: the node is the process here)
    predicted = run_cli("predict", str(source), "--model", str(model), "--json", "--engine", "torch",
                        "--device", "cpu")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    answer = json.loads(predicted.stdout)["results"][0]
    instances = _results_in(orthanc, study["ParentStudy"], 1 + 1 + len(answer["positives"]))
    datasets = [_wado(orthanc, i) for i in instances if i["ID"] != study["ID"]]
    reports = [d for d in datasets if str(d.SOPClassUID) == SR_CLASS]
    captures = [d for d in datasets if str(d.SOPClassUID) == SC_CLASS]
    assert len(reports) == 1 and len(captures) == len(answer["positives"])
    group = hd.sr.ComprehensiveSR.from_dataset(reports[0]).content.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements() if "Threshold" not in m.name.meaning}
    assert values == pytest.approx(answer["probabilities"], abs=1e-6)
    calls = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
    assert [k for k, v in calls.items() if v == "Present"] == answer["positives"]
    original = pydicom.dcmread(source)
    for dataset in [*reports, *captures]:
        assert dataset.StudyInstanceUID == original.StudyInstanceUID
        assert str(dataset.PatientID) == str(original.PatientID)
        assert str(dataset.PatientName) == str(original.PatientName)
        assert dataset.SeriesInstanceUID != original.SeriesInstanceUID
    assert all(c.BurnedInAnnotation == "YES" for c in captures)


@pytest.mark.parametrize("route", ["c-store", "stow-rs"])
def test_orthanc_sends_a_radiograph_and_gets_the_report_and_heat_map_back(tmp_path: Path, other_model: Path,
                                                                          route: str):  # fmt: skip
    node_port = free_port()
    orthanc = Orthanc(tmp_path, node_port)
    send_to = (f"ORTHANC@127.0.0.1:{orthanc.dicom_port}" if route == "c-store"
               else f"{orthanc.url}/dicom-web")  # fmt: skip
    node = _listen(other_model, node_port, send_to, tmp_path / "listen.log")
    try:
        source = as_radiograph(pydicom_sample("JPEG2000.dcm"), tmp_path / "x.dcm")  # compressed
        uploaded = orthanc.upload(source)
        status, body = orthanc.send_to_chexnet(uploaded["ID"])
        assert status == 200, body
        _check_results(orthanc, uploaded, source, other_model)
        # a CT is not a radiograph: Orthanc's store fails with chexnet's status, and the node goes on
        ct = orthanc.upload(pydicom_sample("CT_small.dcm"))
        status, _ = orthanc.send_to_chexnet(ct["ID"])
        assert status != 200
        assert c_echo(node_port) == 0
        log = (tmp_path / "listen.log").read_text()
        assert "refused: SOP class" in log and str(pydicom.dcmread(source).PatientName) not in log
    finally:
        node.terminate()
        node.wait(timeout=60)
        orthanc.stop()
