"""``chexnet serve``: a model behind HTTP (FastAPI on uvicorn), with a page for people.

- ``POST /predict`` (multipart, field ``files``, one or several PNG/JPEG/DICOM files; ``?heatmaps=true``
  adds a Grad-CAM++ overlay PNG per positive finding) → per file its probabilities, the positives at the
  model's thresholds, or its own error; ``GET /model`` (the record and thresholds), ``GET /health``,
  ``GET /`` (the page), ``GET /docs`` (OpenAPI: every answer's shape, the token, every refusal).
- The model and its thresholds load once, at start, by the rules ``chexnet predict`` uses
  (:func:`chexnet.model.thresholds.operating_points`: a thresholds file for another model, other
  findings, a missing finding or a value out of range stops the start). Images of concurrent requests
  are queued to **one** worker that runs them in batches (up to ``max_batch``, waiting at most
  ``batch_wait_ms`` for company), so N clients never make N copies of the network. Heat maps have their
  own worker, network copy and bounded queue: a plain request never waits behind them.
- Limits answer with a 4xx and a JSON ``{"error": ...}``: request size (413; a request without a length
  is refused, 411), number of files (400), file type by content (415 for that file), decoded pixels
  (checked on what the decoder will produce, the DICOM codestream included: 413 for that file), memory
  (every decode in flight holds its share of ``max_decode_bytes``), time (504; a timed-out request's
  images are dropped from the queues). A bad file fails alone with its name, whatever the error; a
  request whose every file failed is a 422. An unexpected error is a 500 with one line, never a traceback.
- Binds to 127.0.0.1 unless told otherwise; any other address needs a bearer token (``--token`` or
  ``CHEXNET_TOKEN``), which ``/predict`` and ``/model`` then require. File names are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import logging
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from chexnet.core.errors import ChexnetError
from chexnet.data.images import OpenedImage
from chexnet.deploy.answers import (
    FileAnswer,
    PredictAnswer,
    error_responses,
    file_answered,
    file_failed,
    prediction_document,
    thresholds_answer,
)
from chexnet.deploy.limits import Limits
from chexnet.deploy.predict import write_overlays
from chexnet.deploy.uploads import MemoryBudget, kind_of

log = logging.getLogger("chexnet.serve")
DEFAULT_LIMITS = Limits()
PAGE = Path(__file__).with_name("page.html")


class Service:
    """The loaded model, its thresholds and engine, the worker that runs them, and the heat-map worker."""

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "auto",
        engine: str = "auto",
        limits: Limits = DEFAULT_LIMITS,
        thresholds: Path | None = None,
        onnx: Path | None = None,
    ):
        from chexnet.deploy.engines import open_engine
        from chexnet.engine.opened import LoadedModel

        self.limits = limits
        # predict's opener: the same precision, image size, layer and thresholds rule, refusals too
        self.loaded = LoadedModel.open(model_path, device=device, thresholds=thresholds, layer="auto")
        self.engine = open_engine(engine, self.loaded, 1, onnx)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chexnet-model")
        # heat maps need gradients and hooks on the network: their own copy and thread, so that a plain
        # request is never queued behind them and their hooks never see the plain worker's batches
        self.heatmap_model = copy.deepcopy(self.loaded.network)
        self.heatmap_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chexnet-heatmaps")
        self.heatmaps_waiting = 0
        self.queue: asyncio.Queue | None = None
        self.memory: MemoryBudget | None = None
        self.batches = 0

    def describe(self) -> dict[str, Any]:
        return {
            "model": str(self.loaded.path),
            "record": self.loaded.info.as_dict(),
            "engine": self.engine.name,
            "thresholds": thresholds_answer(self.loaded).model_dump(),  # as /predict says them
            "limits": asdict(self.limits),
        }

    async def run_batches(self) -> None:
        """The worker loop: take queued images, run them together, answer each future. An image whose
        request has gone (timed out, disconnected) is dropped, not computed."""
        self.queue, self.memory = asyncio.Queue(), MemoryBudget(self.limits.max_decode_bytes)
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.limits.batch_wait_ms / 1000
            while len(items) < self.limits.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except TimeoutError:
                    break
            items = [(image, future) for image, future in items if not future.done()]
            if not items:
                continue
            try:
                pixels = np.stack([image for image, _ in items])
                probabilities = await loop.run_in_executor(self.worker, self.engine.probabilities, pixels)
                self.batches += 1
                for (_, future), p in zip(items, probabilities, strict=True):
                    if not future.done():
                        future.set_result(p)
            except Exception as error:  # one failed batch answers its requests, the loop goes on
                log.exception("a batch of %d images failed", len(items))
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)

    async def predict_one(self, name: str, data: bytes, heatmaps: bool, deadline: float) -> FileAnswer:
        """One uploaded file: typed, checked, decoded within the memory budget, queued; its answer or its
        own error, whatever went wrong with it."""
        try:
            return await self._predict_one(name, data, heatmaps, deadline)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any decoder or engine failure is this file's, never the request's
            return file_failed(name, error)

    async def _predict_one(self, name: str, data: bytes, heatmaps: bool, deadline: float) -> FileAnswer:
        """Typed by its bytes once, opened from memory once (header: what its decode will hold), decoded
        from that same open file once its memory is reserved; nothing is written to disk but heat maps."""
        loop = asyncio.get_running_loop()
        dicom = kind_of(data) == ".dcm"
        opened = await loop.run_in_executor(
            None, partial(OpenedImage, data, self.limits.max_pixels, dicom=dicom)
        )
        with opened:
            async with self.memory.hold(self.limits.decode_cost(opened.pixels)):
                image = await loop.run_in_executor(None, opened.fitted, self.loaded.spec)
        future = loop.create_future()
        await self.queue.put((image, future))
        p = await future
        answer = file_answered(name, p, self.loaded.labels, self.loaded.thresholds)
        if heatmaps and answer.positives:
            with tempfile.TemporaryDirectory(prefix="chexnet-serve-") as folder:
                made = await self._heatmaps(image, name, answer.positives, p, Path(folder), deadline)
            answer = answer.model_copy(update=made)
        return answer

    async def _heatmaps(
        self, image, name: str, positives: list[str], p, folder: Path, deadline: float
    ) -> dict:
        """Overlays from the heat-map worker, or why there are none (its queue is full, time ran out)."""
        if self.heatmaps_waiting >= self.limits.max_heatmaps_waiting:
            return {
                "heatmaps_skipped": f"{self.heatmaps_waiting} images are waiting for heat maps: "
                "ask again later for this file's"
            }
        self.heatmaps_waiting += 1
        try:
            made = await asyncio.get_running_loop().run_in_executor(
                self.heatmap_worker, self._overlays, image, name, positives, p, folder, deadline
            )
        finally:
            self.heatmaps_waiting -= 1
        return {"heatmaps": made} if made is not None else {"heatmaps_skipped": "not made in time"}

    def _overlays(
        self, image: np.ndarray, name: str, positives: list[str], p: np.ndarray, folder: Path, deadline: float
    ) -> dict | None:
        if time.monotonic() > deadline:  # its request has timed out: nobody reads the answer
            return None
        written = write_overlays(
            self.loaded,
            image,
            Path(name),
            positives,
            p,
            out_dir=folder,
            stem="overlay",
            network=self.heatmap_model,
        )
        return {
            label: "data:image/png;base64," + base64.b64encode(Path(f).read_bytes()).decode()
            for label, f in zip(positives, written, strict=True)
        }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# long: the app is its routes and their handlers, each a few lines, kept in one place so that the API
# reads top to bottom as docs/predict.md describes it.
def create_app(service: Service, token: str | None = None):
    """The FastAPI app around a loaded :class:`Service`."""
    limits = service.limits

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(service.run_batches())
        while service.queue is None:
            await asyncio.sleep(0)
        yield
        task.cancel()

    about = "A CheXNet-style chest X-ray classifier: findings at validation thresholds, heat maps."
    app = FastAPI(title="chexnet", version="1", lifespan=lifespan, description=about)
    # the token, declared so that /docs shows it (the middleware below is what checks it)
    secured = (
        [Depends(HTTPBearer(auto_error=False, description="Authorization: Bearer <token>"))] if token else []
    )

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's own refusals (a malformed multipart body, an unknown route) in the declared shape
        answer = refuse(error.status_code, f"{error.detail}")
        answer.headers.update(error.headers or {})  # e.g. a 405's Allow (RFC 9110)
        return answer

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors())
        return refuse(400, f"malformed request: {where[:500]}")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.monotonic()
        if token and request.url.path in ("/predict", "/model"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return refuse(401, "a bearer token is required: Authorization: Bearer <token>")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return refuse(411, "send the request with a Content-Length")
            if not length.isdigit() or int(length) > limits.max_request_bytes:
                return refuse(413, f"request larger than {limits.max_request_bytes:,} bytes")
            if request.url.path == "/predict" and not request.headers.get("content-type", "").startswith(
                "multipart/form-data"
            ):
                return refuse(415, "send the files as multipart/form-data, field 'files'")
        request.state.deadline = started + limits.timeout_s
        try:
            return await asyncio.wait_for(call_next(request), limits.timeout_s - (time.monotonic() - started))
        except TimeoutError:
            return refuse(504, f"not answered within {limits.timeout_s:g} s")
        except Exception:  # never a traceback to the client; the server's log has it
            log.exception("request %s %s failed", request.method, request.url.path)
            return refuse(500, "internal error (the server log says why)")

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "engine": service.engine.name,
            "queued": service.queue.qsize(),
            "batches_run": service.batches,
            "heatmaps_waiting": service.heatmaps_waiting,
        }

    @app.get("/model", dependencies=secured, responses=error_responses(401, 500, 504))
    async def model() -> dict:
        return service.describe()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.post(
        "/predict",
        dependencies=secured,
        response_model=PredictAnswer,
        responses={
            **error_responses(400, 401, 411, 413, 415, 500, 504),
            422: {"model": PredictAnswer, "description": "no file could be read (each says why)"},
        },
    )
    async def predict(
        request: Request,
        files: Annotated[list[UploadFile], File(min_length=1, description="PNG, JPEG or DICOM files")],
        heatmaps: bool = False,
    ):
        if len(files) > limits.max_files:
            return refuse(400, f"{len(files)} files: at most {limits.max_files} a request")
        uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
        deadline = getattr(request.state, "deadline", time.monotonic() + limits.timeout_s)
        answers = await asyncio.gather(*(service.predict_one(n, d, heatmaps, deadline) for n, d in uploads))
        document = prediction_document(service.loaded, service.engine.name, list(answers))
        status = 200 if any(answer.ok for answer in answers) else 422
        return JSONResponse(document.model_dump(exclude_none=True), status_code=status)

    return app


def check_port(port: int) -> None:
    """A port a server can bind, said before the model loads (not after, as a traceback)."""
    if not 1 <= port <= 65535:
        raise ChexnetError(f"--port {port}: a port is 1 to 65535 (1024 and up without root)")


def serve(
    model_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    device: str = "auto",
    engine: str = "auto",
    limits: Limits = DEFAULT_LIMITS,
    thresholds: Path | None = None,
    onnx: Path | None = None,
) -> None:
    """Load the model, then answer on ``host:port`` until stopped."""
    import uvicorn

    check_port(port)
    if not is_loopback(host) and not token:
        raise ChexnetError(
            f"--host {host} is reachable from other machines: give a bearer token (--token or "
            "CHEXNET_TOKEN), or bind to 127.0.0.1"
        )
    service = Service(
        model_path, device=device, engine=engine, limits=limits, thresholds=thresholds, onnx=onnx
    )
    log.info("serving %s on http://%s:%d (engine %s)", model_path, host, port, service.engine.name)
    uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning")
