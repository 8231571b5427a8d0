"""The service's app in process: a file fails alone, decoding is held to a memory budget, heat maps never
starve a plain request, an upload is decoded once from memory (the real server on loopback:
tests/system/test_serve.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from chexnet.model.thresholds import OperatingPoints
from tests.helpers import LABELS, TEST_MODEL_SIZE, png_file


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
    good = png_file(tmp_path / "g.png").read_bytes()
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
    image = png_file(tmp_path / "g.png").read_bytes()

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
        image = np.zeros((TEST_MODEL_SIZE, TEST_MODEL_SIZE), np.uint8)
        await service.queue.put((image, gone))
        await service.queue.put((image, waiting))
        await waiting
        task.cancel()

    asyncio.run(scenario())
    assert seen == [1]


def test_heat_maps_of_a_timed_out_request_are_not_made(model_path: Path):
    service = _service(model_path)
    image, p = np.zeros((TEST_MODEL_SIZE, TEST_MODEL_SIZE), np.uint8), np.zeros(len(LABELS))
    assert service._overlays(image, "x.png", ["Mass"], p, Path("."), time.monotonic() - 1) is None


def test_an_upload_is_typed_once_opened_once_from_memory_and_never_written(
    model_path: Path, tmp_path: Path, monkeypatch
):
    """The service used to type an upload by its bytes three times, write it to a temporary file and
    open that twice (header, then decode). Now: one ``kind_of``, one open from memory whose header
    reserves the memory and whose decode follows, and no file at all when no heat map is asked for."""
    from chexnet.deploy import serve

    service = _service(model_path)
    uploads = [("a.png", png_file(tmp_path / "g.png").read_bytes())]
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
