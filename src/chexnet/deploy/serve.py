"""``chexnet serve``: a model behind HTTP (FastAPI on uvicorn), with a page for people.

- ``POST /predict`` (multipart, field ``files``, one or several PNG/JPEG/DICOM files; ``?heatmaps=true``
  adds a Grad-CAM++ overlay PNG per positive finding) → per file its probabilities, the positives at the
  model's validation thresholds, or its own error; ``GET /model`` (the record and thresholds),
  ``GET /health``, ``GET /`` (the page), ``GET /docs`` (OpenAPI, as FastAPI gives it).
- The model loads once, at start. Images of concurrent requests are queued to **one** worker that runs
  them in batches (up to ``max_batch``, waiting at most ``batch_wait_ms`` for company), so N clients
  never make N copies of the network; heat maps run in the same worker.
- Limits answer with a 4xx and a JSON ``{"error": ...}``: request size (413; a request without a length
  is refused, 411), number of files (400), file type by content (415 for that file), image pixels
  (decompression bombs, 413 for that file), time (504). A bad file fails alone, with its name; a request
  whose every file failed is a 422. An unexpected error is a 500 with one line, never a traceback.
- Binds to 127.0.0.1 unless told otherwise; any other address needs a bearer token (``--token`` or
  ``CHEXNET_TOKEN``), which ``/predict`` and ``/model`` then require.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from chexnet.core.errors import ChexnetError
from chexnet.data.images import load_gray
from chexnet.deploy.limits import Limits
from chexnet.deploy.predict import write_overlays

log = logging.getLogger("chexnet.serve")
DEFAULT_LIMITS = Limits()
PAGE = Path(__file__).with_name("page.html")
KINDS = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


class FileError(ChexnetError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def kind_of(data: bytes) -> str:
    """``.png``, ``.jpg`` or ``.dcm`` by the file's own bytes (never its name); anything else is a 415."""
    for magic, suffix in KINDS.items():
        if data.startswith(magic):
            return suffix
    if data[128:132] == b"DICM":
        return ".dcm"
    raise FileError(415, "not a PNG, JPEG or DICOM file (by its content)")


def check_pixels(path: Path, suffix: str, max_pixels: int) -> None:
    """Refuse an image whose decoded size exceeds ``max_pixels`` before decoding it (a decompression bomb)."""
    if suffix == ".dcm":
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        pixels = int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0)
    else:
        with Image.open(path) as image:
            pixels = image.width * image.height
    if pixels > max_pixels:
        raise FileError(413, f"{pixels:,} pixels: more than this service takes ({max_pixels:,})")


class Service:
    """The loaded model, its thresholds and engine, and the one worker that runs them."""

    def __init__(
        self, model_path: Path, *, device: str = "auto", engine: str = "auto", limits: Limits = DEFAULT_LIMITS
    ):
        from chexnet.deploy.engines import open_engine
        from chexnet.deploy.export import thresholds_beside
        from chexnet.engine.inference import Precision, resolve_device
        from chexnet.model.file import load_model
        from chexnet.model.network import check_target_layer

        self.model_path, self.limits = Path(model_path), limits
        self.device = resolve_device(device)
        model, self.info = load_model(self.model_path)
        if self.info.image_size is None:
            raise ChexnetError(f"{model_path} records no image size: import it first (chexnet import)")
        self.precision = Precision.recorded(self.info.run_as, self.device)
        self.model = model.to(self.device, memory_format=self.precision.memory_format).eval()
        self.labels = list(self.info.labels.names)
        chosen = thresholds_beside(self.model_path, self.info) or {}
        values = chosen.get("thresholds") or chosen.get("values") or {}
        self.thresholds = {label: float(values.get(label, 0.5)) for label in self.labels}
        sources = {"thresholds": "validation (thresholds.json)", "values": "the model's record"}
        self.threshold_source = next(
            (v for k, v in sources.items() if k in chosen), "0.5 (none beside the model)"
        )
        self.layer = check_target_layer(self.model, "auto")
        self.engine = open_engine(
            engine,
            self.model,
            self.info,
            self.model_path,
            self.device,
            self.precision,
            1,
            thresholds=self.thresholds,
        )
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chexnet-model")
        self.queue: asyncio.Queue | None = None
        self.batches = 0

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.model_path), "record": self.info.as_dict(), "engine": self.engine.name,
                "thresholds": {"source": self.threshold_source, "values": self.thresholds},
                "limits": asdict(self.limits)}  # fmt: skip

    async def run_batches(self) -> None:
        """The worker loop: take queued images, run them together, answer each future."""
        self.queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.limits.batch_wait_ms / 1000
            while len(items) < self.limits.max_batch:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except TimeoutError:
                    break
            pixels = np.stack([image for image, _ in items])
            try:
                probabilities = await loop.run_in_executor(self.worker, self.engine.probabilities, pixels)
                self.batches += 1
                for (_, future), p in zip(items, probabilities, strict=True):
                    if not future.done():
                        future.set_result(p)
            except Exception as error:  # one failed batch answers its requests, the loop goes on
                log.exception("a batch failed")
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)

    async def predict_one(self, name: str, data: bytes, heatmaps: bool) -> dict[str, Any]:
        """One uploaded file: read, checked, queued; its answer or its own error."""
        loop = asyncio.get_running_loop()
        try:
            suffix = kind_of(data)
            with tempfile.TemporaryDirectory(prefix="chexnet-serve-") as folder:
                path = Path(folder) / f"upload{suffix}"
                path.write_bytes(data)
                check_pixels(path, suffix, self.limits.max_pixels)
                spec = self.info.input
                image = await loop.run_in_executor(
                    None, load_gray, path, self.info.image_size, spec.resize, spec.fill
                )
                future = loop.create_future()
                await self.queue.put((image, future))
                p = await future
                result = self._result(name, p)
                if heatmaps and result["positives"]:
                    result["heatmaps"] = await loop.run_in_executor(
                        self.worker, self._overlays, image, name, result["positives"], p, Path(folder)
                    )
                return result
        except FileError as error:
            return {"file": name, "ok": False, "status": error.status, "error": str(error)}
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return {"file": name, "ok": False, "status": 422, "error": f"cannot be read: {error}"}

    def _result(self, name: str, p: np.ndarray) -> dict[str, Any]:
        positives = [
            label for label, value in zip(self.labels, p, strict=True) if value >= self.thresholds[label]
        ]
        return {"file": name, "ok": True, "probabilities": dict(zip(self.labels, map(float, p), strict=True)),
                "positives": positives}  # fmt: skip

    def _overlays(
        self, image: np.ndarray, name: str, positives: list[str], p: np.ndarray, folder: Path
    ) -> dict:
        written = write_overlays(self.model, image, Path(name), positives, p, self.labels, out_dir=folder,
                                 target_layer=self.layer, device=self.device, stem="overlay",
                                 precision=self.precision)  # fmt: skip
        return {label: "data:image/png;base64," + base64.b64encode(Path(f).read_bytes()).decode()
                for label, f in zip(positives, written, strict=True)}  # fmt: skip


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

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.monotonic()
        if token and request.url.path in ("/predict", "/model"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given, f"Bearer {token}"):
                return refuse(401, "a bearer token is required: Authorization: Bearer <token>")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return refuse(411, "send the request with a Content-Length")
            if not length.isdigit() or int(length) > limits.max_request_bytes:
                return refuse(413, f"request larger than {limits.max_request_bytes:,} bytes")
        try:
            return await asyncio.wait_for(call_next(request), limits.timeout_s - (time.monotonic() - started))
        except TimeoutError:
            return refuse(504, f"not answered within {limits.timeout_s:g} s")
        except Exception:  # never a traceback to the client; the server's log has it
            log.exception("request %s %s failed", request.method, request.url.path)
            return refuse(500, "internal error (the server log says why)")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "engine": service.engine.name, "queued": service.queue.qsize(),
                "batches_run": service.batches}  # fmt: skip

    @app.get("/model")
    async def model() -> dict:
        return service.describe()

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.post("/predict")
    async def predict(files: Annotated[list[UploadFile], File()], heatmaps: bool = False):
        if len(files) > limits.max_files:
            return refuse(400, f"{len(files)} files: at most {limits.max_files} a request")
        uploads = [(f.filename or f"file{i}", await f.read()) for i, f in enumerate(files)]
        results = await asyncio.gather(*(service.predict_one(n, d, heatmaps) for n, d in uploads))
        body = {"engine": service.engine.name, "thresholds": service.thresholds, "results": list(results)}
        status = 200 if any(r["ok"] for r in results) else 422
        return JSONResponse(body, status_code=status)

    return app


def serve(model_path: Path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          device: str = "auto", engine: str = "auto", limits: Limits = DEFAULT_LIMITS) -> None:  # fmt: skip
    """Load the model, then answer on ``host:port`` until stopped."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ChexnetError(f"--host {host} is reachable from other machines: give a bearer token (--token or "
                           "CHEXNET_TOKEN), or bind to 127.0.0.1")  # fmt: skip
    service = Service(model_path, device=device, engine=engine, limits=limits)
    log.info("serving %s on http://%s:%d (engine %s)", model_path, host, port, service.engine.name)
    uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning")
