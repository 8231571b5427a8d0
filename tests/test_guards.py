"""Round three's guards, one test per mechanism and per case the hostile user found (issue #30): one
thresholds rule for every path, exports and caches checked against the model's sha256, limits on what
is decoded, a service where a file fails alone and heat maps never starve a plain request, one-line
errors from every command."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data.dicom import read_dicom
from chexnet.data.images import ImageReadError, OpenedImage, load_gray, scale_to_uint8
from chexnet.model.file import load_model
from chexnet.model.thresholds import OperatingPoints, ThresholdsError, operating_points, stamp
from tests.conftest import LABELS, run_cli, save_test_model
from tests.dicom_files import claim_size, dx_dicom, gray_jpeg, jpeg_dx_dicom

SIZE = 32


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "m.pth"
    save_test_model(path, image_size=SIZE)
    return path


def _png(path: Path, side: int = 40, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side)).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def _thresholds(model_path: Path, values: dict, **extra) -> Path:
    document = {
        "labels": list(LABELS),
        "method": "youden",
        "chosen_on": "val",
        "thresholds": values,
        "fallbacks": {},
        **extra,
    }
    path = model_path.parent / "thresholds.json"
    path.write_text(json.dumps(document))
    return path


# --- one thresholds rule: predict, serve, export and external read thresholds.json the same way ---


def test_thresholds_of_this_model_are_used_with_their_source(model_path: Path):
    _thresholds(model_path, dict.fromkeys(LABELS, 0.25), model_sha256=io.sha256_of(model_path))
    chosen = operating_points(model_path, load_model(model_path)[1])
    assert chosen.kind == "validation" and set(chosen.values.values()) == {0.25}
    assert str(model_path.parent / "thresholds.json") in chosen.source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.pop("Mass"), "missing \\['Mass'\\]"),
        (lambda v: v.update(Mass=7.0), "not probabilities in \\[0, 1\\]"),
        (lambda v: v.update(Mass=float("nan")), "not probabilities"),
        (lambda v: v.update(Mass=True), "not probabilities"),
    ],
)
def test_a_thresholds_file_predict_refuses_stops_the_service_too(model_path: Path, change, message):
    from chexnet.deploy.serve import Service

    values = dict.fromkeys(LABELS, 0.3)
    change(values)
    _thresholds(model_path, values)
    with pytest.raises(ChexnetError, match=message):
        operating_points(model_path, load_model(model_path)[1])
    with pytest.raises(ChexnetError, match=message):
        Service(model_path, engine="torch", device="cpu")
    result = run_cli("predict", str(_png(model_path.parent / "x.png")), "--model", str(model_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_thresholds_chosen_for_another_model_are_refused_everywhere(model_path: Path, tmp_path: Path):
    other = tmp_path / "other.pth"
    save_test_model(other, image_size=SIZE, seed=1)  # same findings, other weights: a retrain
    _thresholds(model_path, dict.fromkeys(LABELS, 0.3), model_sha256=io.sha256_of(other))
    with pytest.raises(ThresholdsError, match="chosen for another model"):
        operating_points(model_path, load_model(model_path)[1])
    result = run_cli("export", str(model_path), "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and "chosen for another model" in result.stderr


def test_evaluates_stamp_names_the_model_file(model_path: Path):
    document = stamp({"thresholds": {}}, model_path)
    assert document["model_sha256"] == io.sha256_of(model_path)


def test_no_thresholds_file_means_the_record_or_05_said_so(model_path: Path, tmp_path: Path):
    chosen = operating_points(model_path, load_model(model_path)[1])
    assert chosen.kind == "default" and set(chosen.values.values()) == {0.5} and "0.5" in chosen.source
    with pytest.raises(ThresholdsError, match="does not exist"):
        operating_points(model_path, load_model(model_path)[1], tmp_path / "nowhere.json")


# --- exports and caches: checked against the model file's sha256 on every use ---


def test_an_export_of_the_model_before_a_retrain_is_refused(model_path: Path, tmp_path: Path):
    from chexnet.deploy.export import export_onnx

    old = tmp_path / "old.pth"
    save_test_model(old, image_size=SIZE, seed=1)
    export_onnx(old, tmp_path / "old.onnx")  # the same finding names, the other weights
    image = str(_png(tmp_path / "x.png"))
    result = run_cli(
        "predict", image, "--model", str(model_path), "--engine", "onnx", "--onnx", str(tmp_path / "old.onnx")
    )
    assert result.returncode == 1 and "not this model's export" in result.stderr
    export_onnx(model_path, tmp_path / "m.onnx")
    good = run_cli(
        "predict",
        image,
        "--model",
        str(model_path),
        "--engine",
        "onnx",
        "--onnx",
        str(tmp_path / "m.onnx"),
        "--json",
    )
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize("kind", ["missing", "damaged", "png", "other size", "folder"])
def test_a_bad_onnx_file_is_one_line_naming_it(model_path: Path, tmp_path: Path, kind: str):
    from chexnet.deploy.export import export_onnx

    target = tmp_path / "given.onnx"
    if kind == "damaged":
        export_onnx(model_path, target)
        target.write_bytes(target.read_bytes()[:50_000])
    elif kind == "png":
        _png(target)
    elif kind == "other size":
        # the same weights file (same sha256) whose record says 48 px: only the size differs
        bigger = tmp_path / "big" / "m.pth"
        bigger.parent.mkdir()
        bigger.write_bytes(model_path.read_bytes())
        record = json.loads(model_path.with_suffix(".json").read_text())
        bigger.with_suffix(".json").write_text(json.dumps({**record, "image_size": 48}))
        export_onnx(bigger, target)
    elif kind == "folder":
        target.mkdir()
    result = run_cli(
        "predict",
        str(_png(tmp_path / "x.png")),
        "--model",
        str(model_path),
        "--engine",
        "onnx",
        "--onnx",
        str(target),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(target) in result.stderr and "chexnet export" in result.stderr
    if kind == "other size":
        assert "takes [1, 48, 48] pixels, the model 32 × 32" in result.stderr
    assert len([line for line in result.stderr.splitlines() if "ERROR" in line]) == 1, result.stderr


def test_a_damaged_cached_export_is_exported_again(model_path: Path, tmp_path: Path, monkeypatch):
    from chexnet.deploy import engines

    monkeypatch.setattr(engines, "CACHE_DIR", tmp_path / "cache")
    info = load_model(model_path)[1]
    digest = io.sha256_of(model_path)
    first = engines.cached_onnx_engine(model_path, info, torch.device("cpu"), digest)
    first.path.write_bytes(b"not onnx at all")
    again = engines.cached_onnx_engine(model_path, info, torch.device("cpu"), digest)
    assert again.path == first.path and again.path.stat().st_size > 1000


@pytest.mark.parametrize("cache", ["a file", "read-only"])
def test_an_unusable_cache_falls_back_to_torch_under_auto_and_is_named_under_onnx(
    model_path: Path, tmp_path: Path, monkeypatch, cache: str
):
    from chexnet.deploy import engines

    where = tmp_path / "cache"
    if cache == "a file":
        where.write_text("not a folder")
    else:
        where.mkdir()
        where.chmod(0o500)
        if os.access(where, os.W_OK):  # root writes anywhere: the case cannot be made here
            pytest.skip("this user can write a read-only folder (root)")
    monkeypatch.setattr(engines, "CACHE_DIR", where / "onnx" if cache == "read-only" else where)
    image = str(_png(tmp_path / "x.png"))
    auto = run_cli("predict", image, "--model", str(model_path), "--engine", "auto", "--json")
    assert auto.returncode == 0 and "running in PyTorch" in auto.stderr
    assert json.loads(auto.stdout)["results"][0]["ok"]
    onnx = run_cli("predict", image, "--model", str(model_path), "--engine", "onnx")
    assert onnx.returncode == 1 and "CHEXNET_CACHE" in onnx.stderr and "Traceback" not in onnx.stderr


# --- limits on what is decoded ---


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
    png = _png(tmp_path / "big.png", side=300)
    with OpenedImage(png) as opened:  # the header's count, before any decode (what the service reserves)
        assert opened.pixels == 90_000
    with pytest.raises(ImageReadError, match="90,000 pixels"):
        load_gray(png, SIZE, max_pixels=80_000)
    with pytest.raises(ImageReadError, match="90,000 pixels"):
        OpenedImage(png, max_pixels=80_000)


def test_16_bit_scaling_in_place_gives_the_same_pixels_as_the_formula():
    values = np.random.default_rng(0).integers(0, 4096, (300, 200)).astype(np.uint16)
    low, high = float(values.min()), float(values.max())
    expected = np.round((values.astype(np.float64) - low) * (255.0 / (high - low))).astype(np.uint8)
    assert np.array_equal(scale_to_uint8(values), expected)


# --- the service: a file fails alone, memory is budgeted, heat maps never starve a plain request ---


def _service(model_path: Path, **limits):
    from chexnet.deploy.limits import Limits
    from chexnet.deploy.serve import Service

    return Service(model_path, engine="torch", device="cpu", limits=Limits(**limits))


async def _running(service):
    task = asyncio.create_task(service.run_batches())
    while service.queue is None:
        await asyncio.sleep(0)
    return task


def test_any_failure_of_one_file_is_that_files_answer(model_path: Path, tmp_path: Path, monkeypatch):
    service = _service(model_path)
    good = _png(tmp_path / "g.png").read_bytes()
    bad_dicom = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"\x01" * 40

    async def scenario():
        task = await _running(service)
        answers = await asyncio.gather(
            *(
                service.predict_one(name, data, False, time.monotonic() + 60)
                for name, data in [("a.png", good), ("b.dcm", bad_dicom)]
            )
        )
        task.cancel()
        return answers

    a, b = asyncio.run(scenario())
    assert a.ok and set(a.probabilities) == set(LABELS)
    assert not b.ok and b.status == 422 and b.file == "b.dcm"

    def explode(*args, **kwargs):  # an error of a type nobody listed
        raise ZeroDivisionError("a decoder bug")

    monkeypatch.setattr("chexnet.deploy.serve.OpenedImage.fitted", explode)

    async def second():
        task = await _running(service)
        answer = await service.predict_one("c.png", good, False, time.monotonic() + 60)
        task.cancel()
        return answer

    answer = asyncio.run(second())
    assert not answer.ok and "ZeroDivisionError" in answer.error


def test_a_decode_waits_for_its_share_of_the_memory_budget():
    from chexnet.deploy.uploads import FileError, MemoryBudget

    async def scenario():
        budget, order = MemoryBudget(100), []

        async def decode(name: str, cost: int, seconds: float):
            async with budget.hold(cost):
                order.append(f"{name} in")
                await asyncio.sleep(seconds)
                order.append(f"{name} out")

        await asyncio.gather(decode("a", 70, 0.05), decode("b", 70, 0))  # b must wait for a
        with pytest.raises(FileError, match="more than this service allows"):
            async with budget.hold(101):
                pass
        return order, budget.free

    order, free = asyncio.run(scenario())
    assert order == ["a in", "a out", "b in", "b out"] and free == 100


def test_a_plain_request_is_answered_while_the_heat_map_worker_is_busy(model_path: Path, tmp_path: Path):
    service = _service(model_path, max_heatmaps_waiting=1)
    release = threading.Event()
    service.heatmap_worker.submit(release.wait, 60)  # heat maps busy for as long as the test wants
    image = _png(tmp_path / "g.png").read_bytes()

    async def scenario():
        task = await _running(service)
        started = time.monotonic()
        plain = await service.predict_one("plain.png", image, False, started + 60)
        waited = time.monotonic() - started
        service.heatmaps_waiting = 1  # the heat-map queue is full: the next file gets no heat maps
        every_finding_positive = OperatingPoints(dict.fromkeys(LABELS, 0.0), "test", "default")
        service.loaded = dataclasses.replace(service.loaded, operating_points=every_finding_positive)
        full = await service.predict_one("full.png", image, True, started + 60)
        task.cancel()
        return plain, waited, full

    try:
        plain, waited, full = asyncio.run(scenario())
    finally:
        release.set()
    assert plain.ok and waited < 30
    assert full.ok and full.heatmaps is None and "waiting for heat maps" in full.heatmaps_skipped


def test_an_image_whose_request_is_gone_is_not_computed(model_path: Path):
    service = _service(model_path)
    seen = []
    service.engine.probabilities = lambda pixels: seen.append(len(pixels)) or np.zeros((len(pixels), 14))

    async def scenario():
        task = await _running(service)
        loop = asyncio.get_running_loop()
        gone, waiting = loop.create_future(), loop.create_future()
        gone.cancel()  # its request timed out
        image = np.zeros((SIZE, SIZE), np.uint8)
        await service.queue.put((image, gone))
        await service.queue.put((image, waiting))
        await waiting
        task.cancel()

    asyncio.run(scenario())
    assert seen == [1]


def test_heat_maps_of_a_timed_out_request_are_not_made(model_path: Path):
    service = _service(model_path)
    image, p = np.zeros((SIZE, SIZE), np.uint8), np.zeros(len(LABELS))
    assert service._overlays(image, "x.png", ["Mass"], p, Path("."), time.monotonic() - 1) is None


# --- one line for each error a user can make ---


def test_serve_refuses_an_impossible_port_before_loading_the_model(tmp_path: Path):
    result = run_cli("serve", "--model", str(tmp_path / "absent.pth"), "--port", "99999")
    assert result.returncode == 1 and "--port 99999" in result.stderr and "absent" not in result.stderr


@pytest.mark.parametrize("command", ["export", "import"])
def test_out_naming_a_folder_or_an_unwritable_place_is_one_line(model_path: Path, tmp_path: Path, command):
    folder = tmp_path / "a folder"
    folder.mkdir()
    args = (
        [str(model_path), "--out"]
        if command == "export"
        else [str(model_path), "--format", "seed", "--labels", ",".join(LABELS), "--out"]
    )
    result = run_cli(command, *args, str(folder))
    assert result.returncode == 1 and "is a folder" in result.stderr and "Traceback" not in result.stderr
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    result = run_cli(command, *args, str(blocked / "m.out"))
    assert (
        result.returncode == 1 and "cannot be written" in result.stderr and "Traceback" not in result.stderr
    )


def test_labels_naming_a_binary_file_is_one_line(model_path: Path, tmp_path: Path):
    binary = tmp_path / "labels.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_cli(
        "import",
        str(model_path),
        "--format",
        "seed",
        "--labels",
        str(binary),
        "--out",
        str(tmp_path / "x.pth"),
    )
    assert result.returncode == 1 and "not a text file of finding names" in result.stderr


def test_counts_on_a_table_without_the_image_column_names_the_column(tmp_path: Path):
    table = tmp_path / "t.parquet"
    pd.DataFrame({"patologia": ["Mass|Nodule", "No Finding"], "paciente_id": [1, 2]}).to_parquet(table)
    result = run_cli("counts", str(table))
    assert result.returncode == 1 and "has no column 'imagem'" in result.stderr


def test_an_external_set_without_a_table_is_named_by_check(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"external": {"x": {"images": "somewhere"}}}}))
    result = run_cli("check", "--params", str(params))
    assert result.returncode == 1 and "'evaluate.external.x.table' missing" in result.stderr


@pytest.mark.parametrize("name", ["vgg11", "mobilenet_v2"])
def test_a_state_dict_of_another_backbone_is_named_not_read_as_4096_findings(tmp_path: Path, name: str):
    import torchvision

    path = tmp_path / f"{name}.pth"
    torch.save(getattr(torchvision.models, name)(weights=None).state_dict(), path)
    result = run_cli("predict", str(_png(tmp_path / "x.png")), "--model", str(path))
    assert result.returncode == 1 and "is not a densenet121 or resnet50 state_dict" in result.stderr
    assert "4096" not in result.stderr and "missing keys" not in result.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_comes_with_v(model_path: Path, monkeypatch):
    _png(model_path.parent / "x.png")

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : something\nwith a second line")

    monkeypatch.setattr("chexnet.deploy.predict.predict_files", broken)
    result = run_cli("predict", str(model_path.parent), "--model", str(model_path))
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(errors) == 2
    assert "RuntimeError: [ONNXRuntimeError]" in errors[0] and "-v" in errors[1]


# --- an alias that matches nothing is a typo, never a finding left unscored ---


def test_an_alias_that_matches_no_finding_of_the_table_is_refused():
    from chexnet.core.labels import LabelOptions
    from chexnet.data.findings import long_findings
    from chexnet.data.tables import DataError

    cells = pd.Series(["pleural effusion|nodule", "normal"])
    options = LabelOptions(aliases={"pleural effusion": "Effusion", "nodulle": "Nodule", "mass": "Mass"})
    with pytest.raises(DataError, match=r"aliases \['mass', 'nodulle'\] match no finding"):
        long_findings(cells, options)
    fine = LabelOptions(aliases={"pleural effusion": "Effusion", "nodule": "Nodule"})
    assert long_findings(cells, fine)[1] == {"Effusion": 1, "Nodule": 1, "normal": 1}


def test_a_file_name_that_looks_like_tex_is_a_title_not_math(model_path: Path, tmp_path: Path):
    image = _png(tmp_path / "scan$_{2.png")
    result = run_cli(
        "predict",
        str(image),
        "--model",
        str(model_path),
        "--engine",
        "torch",
        "--heatmaps",
        str(tmp_path / "maps"),
        "--thresholds",
        str(_thresholds(model_path, dict.fromkeys(LABELS, 0.0))),
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "maps").glob("*.png"))) == len(LABELS)


def test_a_failed_save_leaves_neither_the_model_nor_its_record(tmp_path: Path, monkeypatch):
    from chexnet.model import file

    path = tmp_path / "models" / "m.pth"
    save_test_model(path, image_size=SIZE)
    before = (path.read_bytes(), file.model_info_path(path).read_text())
    info = load_model(path)[1]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for broken in (file.torch, file.io):  # the weights' write, then the record's
        with monkeypatch.context() as patch:
            patch.setattr(broken, "save" if broken is file.torch else "write_json", full_disk)
            with pytest.raises(OSError):
                file.save_model(path, torch.nn.Linear(1, 1).state_dict(), info.__class__(info.labels, 64))
    assert (path.read_bytes(), file.model_info_path(path).read_text()) == before  # the old pair, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.pth"]  # no temporary left


def test_an_upload_is_typed_once_opened_once_from_memory_and_never_written(
    model_path: Path, tmp_path: Path, monkeypatch
):
    """The service used to type an upload by its bytes three times, write it to a temporary file and
    open that twice (header, then decode). Now: one ``kind_of``, one open from memory whose header
    reserves the memory and whose decode follows, and no file at all when no heat map is asked for."""
    from chexnet.deploy import serve

    service = _service(model_path)
    uploads = [("a.png", _png(tmp_path / "g.png").read_bytes())]
    typed, opened = [], []
    real_kind, real_init = serve.kind_of, serve.OpenedImage.__init__
    monkeypatch.setattr(serve, "kind_of", lambda data: typed.append(1) or real_kind(data))

    def counting_init(self, source, *args, **kwargs):
        opened.append(type(source))
        real_init(self, source, *args, **kwargs)

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload without heat maps touched the disk")

    monkeypatch.setattr(serve.OpenedImage, "__init__", counting_init)
    monkeypatch.setattr(serve.tempfile, "TemporaryDirectory", no_disk)

    async def scenario():
        task = await _running(service)
        answers = [await service.predict_one(n, d, False, time.monotonic() + 60) for n, d in uploads]
        task.cancel()
        return answers

    (answer,) = asyncio.run(scenario())
    assert answer.ok, answer
    assert typed == [1] and opened == [bytes]
