"""``chexnet listen``'s node in process, against real DICOM and HTTP peers on loopback (pynetdicom SCUs
and a storage SCP, an http.server taking STOW-RS): radiographs in, an SR and heat maps back that say what
``chexnet predict --json`` says; each bad object refused alone with its status while C-ECHO keeps
answering; several associations at once, nothing lost. (Against a real PACS, Orthanc:
tests/system/test_pacs.py.)"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from chexnet.deploy import dicom_node
from chexnet.deploy.dicom_node import Destination, DicomNode
from chexnet.engine.opened import LoadedModel
from tests.helpers import (
    SC_CLASS,
    SR_CLASS,
    Pacs,
    as_radiograph,
    c_echo,
    c_store,
    claim_size,
    demo_radiograph,
    gray_jpeg,
    jpeg_dx_dicom,
    pydicom_sample,
    run_cli,
)


@pytest.fixture
def node(other_model: Path):
    pacs = Pacs()
    loaded = LoadedModel.open(other_model, device="cpu", layer="auto")
    running = DicomNode(loaded, Destination.parse(f"PACS@127.0.0.1:{pacs.port}"))
    server = running.start("127.0.0.1", 0)
    yield running, server.server_address[1], pacs
    running.stop()
    pacs.server.shutdown()


def _radiographs(tmp_path: Path) -> list[Path]:
    """pydicom's CT sample and JPEG 2000 sample rewritten as DX, and a demo image as an RLE-compressed DX."""
    samples = [as_radiograph(pydicom_sample(name), tmp_path / f"{i}.dcm")
               for i, name in enumerate(("CT_small.dcm", "JPEG2000.dcm"))]  # fmt: skip
    return [*samples, demo_radiograph(tmp_path / "demo.dcm", compressed=True)]


def test_radiographs_in_an_sr_and_heat_maps_back_saying_what_predict_says(node, tmp_path: Path, other_model):
    running, port, pacs = node
    files = _radiographs(tmp_path)
    assert c_echo(port) == 0
    assert c_store(port, [pydicom.dcmread(f) for f in files]) == [0, 0, 0]
    running.queue.join()
    reports, captures = pacs.of_class(SR_CLASS), pacs.of_class(SC_CLASS)
    assert len(reports) == 3 and len(captures) == 3  # one positive each: Derrame (threshold 0)
    predicted = json.loads(run_cli("predict", *map(str, files), "--model", str(other_model), "--json").stdout)
    by_study = {
        pydicom.dcmread(f).StudyInstanceUID: a for f, a in zip(files, predicted["results"], strict=True)
    }
    for report in reports:
        answer = by_study[report.StudyInstanceUID]  # each in its own source's study
        group = hd.sr.ComprehensiveSR.from_dataset(report).content.get_image_measurement_groups()[0]
        values = {
            m.name.meaning: m.value for m in group.get_measurements() if "Threshold" not in m.name.meaning
        }
        assert values == pytest.approx(answer["probabilities"], abs=1e-6)
        calls = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert [k for k, v in calls.items() if v == "Present"] == answer["positives"]
    assert {c.StudyInstanceUID for c in captures} == set(by_study)
    assert running.sent == 3 and running.failed == 0


def test_each_bad_object_is_refused_alone_with_its_status_and_echo_keeps_answering(node, tmp_path: Path):
    running, port, pacs = node
    ct = pydicom.dcmread(pydicom_sample("CT_small.dcm"))  # a CT: not a radiograph's SOP class
    bomb = pydicom.dcmread(jpeg_dx_dicom(tmp_path / "bomb.dcm", claim_size(gray_jpeg(64), 60000, 60000),
                                         60000, 60000))  # fmt: skip
    frames = pydicom.dcmread(as_radiograph(pydicom_sample("SC_rgb_rle_2frame.dcm"), tmp_path / "f.dcm"))
    truncated = pydicom.dcmread(_radiographs(tmp_path)[0])
    truncated.PixelData = truncated.PixelData[:100]
    good = pydicom.dcmread(_radiographs(tmp_path)[1])
    statuses = c_store(port, [ct, bomb, frames, truncated, good])
    assert statuses == [
        dicom_node.SOP_CLASS_NOT_SUPPORTED,
        dicom_node.OUT_OF_RESOURCES,
        dicom_node.DOES_NOT_MATCH,
        dicom_node.CANNOT_UNDERSTAND,
        0,
    ]
    assert c_echo(port) == 0
    running.queue.join()
    assert len(pacs.of_class(SR_CLASS)) == 1 and running.received == 5


def test_a_calling_ae_title_not_allowed_is_refused_at_association(other_model: Path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    loaded = LoadedModel.open(other_model, device="cpu", layer="auto")
    running = DicomNode(loaded, Destination.parse("PACS@127.0.0.1:1"), allowed=["MODALITY"])
    port = running.start("127.0.0.1", 0).server_address[1]
    try:
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(Verification)
        association = ae.associate("127.0.0.1", port, ae_title="CHEXNET")
        assert association.is_rejected
        assert c_echo(port) == 0  # MODALITY is allowed
    finally:
        running.stop()


def test_several_associations_at_once_lose_nothing(node, tmp_path: Path):
    running, port, pacs = node
    files = _radiographs(tmp_path)
    batches = [[pydicom.dcmread(files[(i + j) % len(files)]) for j in range(3)] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda batch: c_store(port, batch), batches))
    running.queue.join()
    assert statuses == [[0, 0, 0]] * 4
    assert len(pacs.of_class(SR_CLASS)) == 12 and running.failed == 0


def test_results_go_to_a_dicomweb_server_by_stow_rs_with_the_token(other_model: Path, tmp_path: Path):
    received: list[tuple[str, str, bytes]] = []

    class Stow(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                (self.path, self.headers.get("Authorization", ""), self.headers["Content-Type"], body)
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    loaded = LoadedModel.open(other_model, device="cpu", layer="auto")
    url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    running = DicomNode(loaded, Destination.parse(url, token="s3cret"))
    port = running.start("127.0.0.1", 0).server_address[1]
    try:
        assert c_store(port, [pydicom.dcmread(_radiographs(tmp_path)[0])]) == [0]
        running.queue.join()
    finally:
        running.stop()
        server.shutdown()
    (path, authorization, kind, body) = received[0]
    assert path == "/dicom-web/studies" and authorization == "Bearer s3cret"
    assert kind.startswith('multipart/related; type="application/dicom"')
    boundary = kind.split("boundary=")[1].encode()
    parts = [p.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n") for p in body.split(b"--" + boundary)[1:-1]]
    classes = sorted(str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(p)).SOPClassUID) for p in parts)
    assert classes == sorted([SR_CLASS, SC_CLASS])


def test_a_destination_that_is_neither_a_node_nor_a_url_is_refused_in_one_line():
    from chexnet.core.errors import ChexnetError

    with pytest.raises(ChexnetError, match="write AET@HOST:PORT"):
        Destination.parse("orthanc:4242")
