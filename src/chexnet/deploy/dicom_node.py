"""``chexnet listen``: chexnet as a node on a hospital's DICOM network (issue #34; docs/dicom.md).

A C-STORE SCP (pynetdicom) that accepts projection radiographs (CR, DX for presentation and for
processing) and answers C-ECHO; each image it accepts is run through the model (the same opener, engine
choice and thresholds as ``chexnet predict`` and the service) and its results, a Structured Report and
a heat-map Secondary Capture per positive finding (:mod:`chexnet.deploy.dicom_results`), are sent to the
configured destination: another DICOM node by C-STORE (``AET@HOST:PORT``), or a DICOMweb server by
STOW-RS (``http://host:8042/dicom-web``).

**When is a study complete?** Never waited for: results are per image, sent as soon as the image is
done, so a study that arrives image by image gets its results image by image, and nothing is lost when
a sender never says the study is over.

**Many senders, one model.** Associations are served on their own threads and only queue what they
receive; one worker thread runs the model (one copy in memory) over the queue in arrival order. A store
is answered as soon as its image is checked and queued.

**What is refused, with which status** (PS3.4 Annex B.2.3; a log line each, never a crash; C-ECHO keeps
answering): another SOP class, 0x0122 "SOP class not supported"; a dataset over ``max_bytes`` or an
image over ``max_pixels`` decoded (a decompression bomb is caught from its header and codestream before
any decode), 0xA700 "out of resources"; not a one-frame grayscale projection radiograph, 0xA900 "data
set does not match SOP class"; anything that cannot be read, 0xC000 "cannot understand". A calling AE
title not in the allow-list is refused at association. Patient data are never logged: an image is
named by its position in the node's count.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from io import BytesIO

from chexnet.core.errors import ChexnetError

log = logging.getLogger(__name__)

RADIOGRAPHS = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
SUCCESS, SOP_CLASS_NOT_SUPPORTED, OUT_OF_RESOURCES = 0x0000, 0x0122, 0xA700
DOES_NOT_MATCH, CANNOT_UNDERSTAND = 0xA900, 0xC000
MISMATCH_REASONS = {"not_radiograph", "multi_frame", "not_grayscale"}


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (``AET@HOST:PORT``) or a DICOMweb server's root URL."""

    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    url: str | None = None
    token: str | None = None
    basic: str | None = None  # "user:password"

    @classmethod
    def parse(cls, spec: str, *, token: str | None = None, basic: str | None = None) -> Destination:
        if spec.startswith(("http://", "https://")):
            return cls(url=spec.rstrip("/"), token=token, basic=basic)
        title, _, address = spec.partition("@")
        host, _, port = address.rpartition(":")
        if not title or not host or not port.isdigit() or not 0 < int(port) < 65536 or len(title) > 16:
            raise ChexnetError(
                f"--send-to {spec!r}: write AET@HOST:PORT (an AE title of at most 16 characters), e.g. "
                "ORTHANC@127.0.0.1:4242, or a DICOMweb root URL, e.g. http://127.0.0.1:8042/dicom-web"
            )
        return cls(ae_title=title, host=host, port=int(port))


def send(datasets: list, destination: Destination, *, calling_ae: str) -> None:
    """Every dataset to ``destination``, by C-STORE or STOW-RS; raises ChexnetError naming what failed."""
    if destination.url:
        _stow(datasets, destination)
        return
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    for sop_class in {str(d.SOPClassUID) for d in datasets}:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not association.is_established:
        raise ChexnetError(
            f"{destination.ae_title}@{destination.host}:{destination.port} refused the association"
        )
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code != SUCCESS:
                raise ChexnetError(f"{destination.ae_title} answered C-STORE with status {code}")
    finally:
        association.release()


def _stow(datasets: list, destination: Destination) -> None:
    """STOW-RS (PS3.18 10.5): one multipart/related POST of every dataset to ``<root>/studies``."""
    import base64
    import urllib.error
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = BytesIO()
    for dataset in datasets:
        encoded = BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(encoded.getvalue() + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}  # fmt: skip
    if destination.token:
        headers["Authorization"] = f"Bearer {destination.token}"
    elif destination.basic:
        headers["Authorization"] = "Basic " + base64.b64encode(destination.basic.encode()).decode()
    request = urllib.request.Request(f"{destination.url}/studies", data=body.getvalue(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status not in (200, 202):
                raise ChexnetError(f"STOW-RS to {destination.url} answered HTTP {response.status}")
    except urllib.error.URLError as error:
        raise ChexnetError(f"STOW-RS to {destination.url} failed: {error}") from error


class DicomNode:
    """The SCP: checks and queues what arrives, one worker runs the model and sends the results."""

    def __init__(
        self,
        loaded,
        destination: Destination,
        *,
        ae_title: str = "CHEXNET",
        engine=None,
        allowed: Iterable[str] | None = None,
        max_bytes: int = 64 * 2**20,
        max_pixels: int | None = None,
    ):
        from chexnet.data.pixels import MAX_PIXELS

        self.loaded, self.destination, self.ae_title, self.engine = loaded, destination, ae_title, engine
        self.allowed = [a for a in (allowed or []) if a]
        self.max_bytes, self.max_pixels = max_bytes, max_pixels or MAX_PIXELS
        self.queue: queue.Queue = queue.Queue()
        self.received = self.sent = self.failed = 0
        self._count = threading.Lock()
        self._server = None
        self._worker = threading.Thread(target=self._work, name="chexnet-listen-worker", daemon=True)

    # --- receiving (pynetdicom's association threads) ---
    def handle_store(self, event) -> int:
        from chexnet.data.images import OpenedImage
        from chexnet.data.pixels import ImageReadError

        with self._count:
            self.received += 1
            number = self.received
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in RADIOGRAPHS:
            log.warning("image %d refused: SOP class %s is not a projection radiograph's", number, sop_class)
            return SOP_CLASS_NOT_SUPPORTED
        size = len(event.request.DataSet.getvalue())
        if size > self.max_bytes:
            log.warning("image %d refused: %d bytes, more than %d", number, size, self.max_bytes)
            return OUT_OF_RESOURCES
        try:
            opened = OpenedImage(event.encoded_dataset(), self.max_pixels, dicom=True)
        except ImageReadError as error:
            log.warning("image %d refused: %s", number, error)
            if error.reason == "too_large":
                return OUT_OF_RESOURCES
            return DOES_NOT_MATCH if error.reason in MISMATCH_REASONS else CANNOT_UNDERSTAND
        except Exception as error:  # a malformed dataset: its status, never a crash
            log.warning("image %d refused: %s: %s", number, type(error).__name__, str(error)[:200])
            return CANNOT_UNDERSTAND
        self.queue.put((number, opened))
        return SUCCESS

    # --- the worker: the model, the results, the destination ---
    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            number, opened = item
            try:
                results = self.results(opened)
                send(results, self.destination, calling_ae=self.ae_title)
                with self._count:
                    self.sent += 1
                log.info("image %d: results sent (%d object(s))", number, len(results))
            except Exception as error:  # one image's failure is its own; the node goes on
                with self._count:
                    self.failed += 1
                log.error("image %d: no results sent: %s: %s", number, type(error).__name__, str(error)[:300])
            finally:
                self.queue.task_done()

    def results(self, opened) -> list:
        """The SR and heat-map SCs of one opened image, as ``chexnet predict --dicom-out`` makes them."""
        from chexnet.deploy.answers import file_answered
        from chexnet.deploy.dicom_results import results_for
        from chexnet.deploy.predict import overlay_images
        from chexnet.engine import inference

        loaded = self.loaded
        pixels = opened.fitted(loaded.spec)[None]
        if self.engine is None:
            probabilities = inference.predict_images(loaded.network, pixels, loaded.device, loaded.precision)[
                0
            ]
        else:
            probabilities = self.engine.probabilities(pixels)[0]
        answer = file_answered("image", probabilities, loaded.labels, loaded.thresholds)
        overlays = overlay_images(loaded, pixels[0], answer.positives) if answer.positives else []
        return results_for(opened.dataset, answer, loaded, overlays)

    # --- running ---
    def start(self, host: str, port: int):
        """Serve on ``host:port`` in the background (the worker too); returns the server."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:  # others get a status, not a rejected context
            ae.add_supported_context(context.abstract_syntax, _TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allowed:
            ae.require_calling_aet = self.allowed
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
        self._worker.start()
        self._server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        log.info("listening as %s on %s:%d; results to %s", self.ae_title, host, port, self._where())
        return self._server

    def stop(self, *, drain: bool = True) -> None:
        if self._server is not None:
            self._server.shutdown()
        if drain:
            self.queue.join()
        self.queue.put(None)

    def _where(self) -> str:
        d = self.destination
        return d.url or f"{d.ae_title}@{d.host}:{d.port}"


def _transfer_syntaxes() -> list[str]:
    """Uncompressed and every compressed syntax pydicom's installed decoders read (requirements.txt)."""
    from pydicom import uid

    return [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLosslessSV1, uid.JPEGLossless,
            uid.JPEG2000Lossless, uid.JPEG2000, uid.JPEGLSLossless, uid.JPEGLSNearLossless,
            uid.RLELossless]  # fmt: skip


_TRANSFER_SYNTAXES = _transfer_syntaxes()
