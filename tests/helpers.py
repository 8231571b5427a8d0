"""The helpers tests share: the repository's paths, tiny models and work folders, the in-process CLI,
the environment of a process a system test starts, DICOM files written with pydicom, and an HTTP client
for the service. One module, imported as ``from tests.helpers import ...`` (fixtures live in conftest.py).
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from chexnet.core.labels import NIH14, LabelList, write_labels_json

LABELS = NIH14  # the tiny work dirs use NIH's 14 findings in CheXNet's order
REPO = Path(__file__).resolve().parents[1]
SHARED_NIH = REPO.parent / "shared" / "data" / "nih"


# --- processes, models and work folders ---


def torch_threads() -> int:
    """Threads for a test's own torch work: 2 (CI's cores) in one pytest process; 1 in each of
    pytest-xdist's workers (the system tier runs as two: README, "Test"), and one OpenMP thread for the
    processes they start (:func:`process_env`). Two workers of two threads each on 2 cores made the
    tests that train 2-8 times slower (measured, README)."""
    return 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


def process_env() -> dict[str, str]:
    """The environment of a process a system test starts: ``python`` and ``dvc`` are this venv's (as
    after ``. .venv/bin/activate``), DVC sends no analytics, and git commits need no user config. Under
    pytest-xdist each worker's processes get one OpenMP thread (unless a test sets its own), as the
    worker itself does (:func:`torch_threads`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    if torch_threads() == 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    return env


def free_port() -> int:
    """A TCP port on loopback nobody listens on now (for a server a test or benchmark starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def committed(path: str) -> bytes:
    """``path`` as the checked-out commit holds it (``git show HEAD:path``): the run the repository
    ships, not what a local ``dvc repro`` rewrote. The README's two commands, ``dvc repro`` then the
    tests, must compose on any CPU, and a CPU without native bf16 trains in fp32 and writes other figures:
    tests of the shipped run's figures read them here. Skips where the checkout is not a git repository."""
    result = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"no committed {path} (not a git checkout?): {result.stderr.decode()[:200]}")
    return result.stdout


@functools.cache
def _random_weights(findings: int, seed: int) -> dict[str, torch.Tensor]:
    """A random CheXNet's state_dict, built once per process for each (findings, seed): building
    DenseNet121 costs a quarter of a second, and the fast tiers save a model in dozens of tests. The
    global RNG is left as it was."""
    from chexnet.model.network import CheXNet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CheXNet(findings).state_dict()


def save_test_model(
    path: Path, labels: tuple[str, ...] = LABELS, image_size: int | None = 32, seed: int = 0
) -> Path:
    """A random CheXNet saved as train saves it: the seed-format state_dict and its JSON beside it."""
    from chexnet.model.file import ModelInfo, save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    weights = _random_weights(len(labels), seed)
    save_model(path, weights, ModelInfo(LabelList(tuple(labels), "nih14"), image_size))
    return path


TEST_MODEL_SIZE = 32  # the image size of the tiny models the fast tiers run (conftest's model_path)


def png_file(path: Path, side: int = 40, seed: int = 0) -> Path:
    """A random gray PNG of ``side`` × ``side`` pixels at ``path``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side)).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def thresholds_file(model_path: Path, values: dict, **extra) -> Path:
    """A thresholds.json beside ``model_path`` as the evaluate stage writes it (``extra``: more keys,
    e.g. its ``model_sha256``)."""
    document = {"labels": list(LABELS), "method": "youden", "chosen_on": "val", "thresholds": values,
                "fallbacks": {}, **extra}  # fmt: skip
    path = model_path.parent / "thresholds.json"
    path.write_text(json.dumps(document))
    return path


def nih_named_pngs(folder: Path, n: int) -> list[str]:
    """``n`` flat gray 40 px PNGs named as NIH names its images (``00000000_000.png``, ...) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i:08d}_000.png" for i in range(n)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((40, 40), (20 * i) % 256, np.uint8)).save(folder / name)
    return names


def param_leaves() -> list[tuple[str, type, dict]]:
    """Every leaf of the params schema as ``(dotted key, type hint, its param(...) metadata)``: the
    sweeps over every param derive their cases from the schema, so a param added tomorrow is covered."""
    import dataclasses
    import typing

    from chexnet.config.params import Params

    def walk(cls, prefix: str):
        hints = typing.get_type_hints(cls)
        for spec in dataclasses.fields(cls):
            hint = hints[spec.name]
            if dataclasses.is_dataclass(hint):
                yield from walk(hint, f"{prefix}{spec.name}.")
            else:
                yield f"{prefix}{spec.name}", hint, dict(spec.metadata)

    return list(walk(Params, ""))


def set_dotted(mapping: dict, key: str, value) -> dict:
    """``mapping`` with ``value`` at the dotted params key (``"data.views"``), sections made as needed."""
    *parents, leaf = key.split(".")
    node = mapping
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return mapping


def make_workdir(root: Path, epochs: int, n: int = 48, size: int = 32) -> Path:
    """A tiny prepared cache and split, as prepare and split would leave them, plus params.yaml."""
    rng = np.random.default_rng(0)
    (root / "data" / "prepared").mkdir(parents=True)
    labels = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    images[labels[:, 2] == 1, -10:, :] = 255
    np.save(root / "data" / "prepared" / "images.npy", images)
    index = pd.DataFrame(
        {
            "row": np.arange(n),
            "image": [f"{i:08d}_000.png" for i in range(n)],
            "patient": [str(i // 2) for i in range(n)],
        }
    )
    index["width"], index["height"] = 1024, 1024
    index[list(LABELS)] = labels
    index.to_parquet(root / "data" / "prepared" / "index.parquet", index=False)
    write_labels_json(root / "data" / "prepared" / "labels.json", LabelList(LABELS, "nih14"))
    index["split"] = np.array(["val", "test", "train", "train"])[np.arange(n) // 2 % 4]  # 2 images a patient
    index.to_parquet(root / "data" / "split.parquet", index=False)
    params = {"epochs": epochs, "batch_size": 8, "weights": "none", "device": "cpu", "seed": 3}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _in_process(command: list[str], call, cwd: Path | None) -> subprocess.CompletedProcess:
    """Run ``call()`` (it returns an exit status or raises ``SystemExit``) in ``cwd`` with stdout and
    stderr captured, log lines included in the format a stage or the CLI writes them, and answer like
    ``subprocess.run(capture_output=True)``. An exception ``call`` does not turn into a message is not
    caught: the test fails with its traceback, as a process would print one."""
    import contextlib
    import io as text_io
    import logging

    out, err = text_io.StringIO(), text_io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with (
            contextlib.chdir(cwd or Path.cwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = call()
            except SystemExit as stop:  # argparse's usage errors and --help; a stage's end
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(command, code or 0, out.getvalue(), err.getvalue())


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``chexnet ARGS`` run in this process, answered like ``subprocess.run(capture_output=True)``.

    The command's ``main`` is what ``python -m chexnet`` runs; calling it here skips a new interpreter
    and a torch import per call (seconds each; the fast inner loop runs dozens).
    ``tests/system/test_reliability_processes.py`` keeps real-process runs of the same messages.
    """
    from chexnet.cli.main import main

    return _in_process(["chexnet", *args], lambda: main(list(args)), cwd)


def run_stage(stage: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python stages/<stage>.py ARGS`` as DVC runs it, but in this process, in ``cwd``.

    ``runpy`` executes the script as ``__main__`` with that argv: its imports, its parser, its params
    and ``run_stage``'s one-line errors are the ones ``dvc repro`` starts, without a new interpreter and
    a torch import (seconds each). What only a process has is left out here and tested in
    ``tests/system/`` (test_lifecycle.py, test_robustness.py): the SIGTERM handler and the thread that
    watches for a vanished ``dvc``, which in this process would outlive the call.
    """
    import runpy
    from unittest import mock

    from chexnet.pipeline import lifecycle

    script = REPO / "stages" / f"{stage}.py"

    def call() -> int:
        with (
            mock.patch.object(sys, "argv", [str(script), *args]),
            mock.patch.object(lifecycle, "handle_sigterm", lambda: None),
            mock.patch.object(lifecycle, "watch_launcher", lambda *a, **k: None),
        ):
            runpy.run_path(str(script), run_name="__main__")
        return 0

    return _in_process([sys.executable, str(script), *args], call, cwd)


# --- DICOM files ---

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def _dx_dataset(transfer_syntax: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    return dataset


def dx_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Path:
    """A minimal 12-bit DX DICOM, uncompressed."""
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = _dx_dataset(ExplicitVRLittleEndian)
    dataset.set_pixel_data(pixels.astype(np.uint16), photometric_interpretation=photometric, bits_stored=12)
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(path, enforce_file_format=True)
    return path


def pydicom_sample(name: str) -> Path:
    """One of pydicom's own test files (shipped in its wheel; skipped where this version lacks it)."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom's test file {name} is not shipped in this version")
    return Path(found)


def as_radiograph(source: Path, target: Path) -> Path:
    """A pydicom sample rewritten as a DX radiograph (Modality and SOP class), its pixel data, transfer
    syntax (compressed ones too), patient and study modules kept: what a PACS would send chexnet."""
    import pydicom

    dataset = pydicom.dcmread(source)
    dataset.Modality = "DX"
    dataset.SOPClassUID = DX_STORAGE
    if getattr(dataset, "file_meta", None) is not None:
        dataset.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    dataset.save_as(target)
    return target


def demo_radiograph(path: Path, findings: frozenset[str] = frozenset({"Effusion"}), *, size: int = 128,
                    seed: int = 0, compressed: bool = False) -> Path:  # fmt: skip
    """A demo image (the synthetic painter's) written as a hospital's DX radiograph: 12 bits, with patient
    and study modules, RLE-compressed when asked."""
    from pydicom.uid import RLELossless, generate_uid

    from chexnet.synthetic.painter import Anatomy, draw_radiograph

    rng = np.random.default_rng(seed)
    image, _ = draw_radiograph(size, Anatomy.sample(rng), set(findings), rng)
    dx_dicom(path, np.round(np.clip(image, 0, 1) * 4095))
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.PatientName, dataset.PatientID, dataset.PatientSex = "Demo^Patient", f"DEMO{seed:04d}", "F"
    dataset.PatientBirthDate, dataset.StudyDate, dataset.StudyTime = "19700101", "20261206", "120000"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.StudyID, dataset.AccessionNumber, dataset.SeriesNumber, dataset.InstanceNumber = "1", "A1", 1, 1
    dataset.ReferringPhysicianName, dataset.Manufacturer = "", "chexnet demo"
    if compressed:
        dataset.compress(RLELossless)
    dataset.save_as(path, enforce_file_format=True)
    return path


def gray_jpeg(side: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side)).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def claim_size(jpeg: bytes, rows: int, columns: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) saying ``rows × columns``: what a decoder would allocate."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + jpeg[at + 9 :]


def jpeg_dx_dicom(path: Path, jpeg: bytes, rows: int, columns: int) -> Path:
    """A DX DICOM (JPEG Baseline) holding ``jpeg`` as its one frame, its header saying ``rows × columns``."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    dataset = _dx_dataset(JPEGBaseline8Bit)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit, dataset.PixelRepresentation = 7, 0
    dataset.PixelData = encapsulate([jpeg])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    return path


# --- an HTTP client for the service (tests/system/test_serve.py, benchmarks/serve_load.py) ---


def png_bytes(seed: int, shape=(80, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def multipart_body(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
         f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
        for name, data in files
    ]  # fmt: skip
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http_post(url: str, files: list[tuple[str, bytes]], token: str | None = None) -> tuple[int, dict]:
    body, kind = multipart_body(files)
    headers = {"Content-Type": kind, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def http_get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- predictions files (chexnet compare) ---


def predictions_frame(seed: int, images: int = 60, order=None) -> pd.DataFrame:
    """A predictions file as the evaluate stage writes it, two findings, the same labels for every
    ``seed`` (the model), in ``order`` when given (tests of ``chexnet compare``)."""
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(0).random((images, 2)) < 0.4  # the same labels for every model
    frame = pd.DataFrame({"row": range(images), "image": [f"{i:05d}.png" for i in range(images)],
                          "patient": [str(i // 2) for i in range(images)]})  # fmt: skip
    for j, finding in enumerate(("Derrame", "Nódulo")):
        frame[finding] = truth[:, j].astype(float)
        frame[f"p_{finding}"] = np.clip(truth[:, j] * 0.3 + rng.random(images) * 0.7, 0, 1)
    return frame if order is None else frame.iloc[order].reset_index(drop=True)


# --- DICOM network peers (chexnet listen: tests/stage/test_listen.py, tests/system/test_pacs.py) ---


class Pacs:
    """A storage SCP on loopback keeping what it receives (a real DICOM peer, not a mock)."""

    def __init__(self):
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.received: list = []
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()

    def _store(self, event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        self.received.append(dataset)
        return 0x0000

    def of_class(self, sop_class: str) -> list:
        return [d for d in self.received if str(d.SOPClassUID) == sop_class]


SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


def c_store(port: int, datasets: list, calling: str = "MODALITY") -> list[int]:
    """Each dataset sent to the node on ``port`` in one association; their C-STORE statuses."""
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    for dataset in datasets:
        ae.add_requested_context(str(dataset.SOPClassUID), [str(dataset.file_meta.TransferSyntaxUID)])
    association = ae.associate("127.0.0.1", port, ae_title="CHEXNET")
    assert association.is_established
    try:
        return [int(association.send_c_store(d).Status) for d in datasets]
    finally:
        association.release()


def c_echo(port: int) -> int:
    """C-ECHO to the node on ``port``: 0 when it answers."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title="CHEXNET")
    if not association.is_established:
        return -1
    try:
        return int(association.send_c_echo().Status)
    finally:
        association.release()
