"""Inference engines for predict and the service: PyTorch (fp32, or the model's recorded precision and
layout) and ONNX Runtime (fp32), behind one call: gray pixels fitted to the square → probabilities.

``auto`` picks by the rule measured in benchmarks/predict_speed.py (benchmarks/README.md, "Predict
engines"): on CUDA, PyTorch; on a CPU, ONNX Runtime for small batches (a service's one image at a time:
2.8× today's fp32 predict at batch 1 on the development machine). For larger batches the winner
depends on the CPU (PyTorch in bf16 + channels_last won at batch 16 on one 2-core draw, ONNX Runtime on
the next), so where the CPU runs bf16 natively and the model was trained in it, ``auto`` times both
once on this machine at that batch size and keeps the faster (cached in ``~/.cache/chexnet``); elsewhere
ONNX Runtime. Heat maps need gradients, so Grad-CAM++ always runs in PyTorch.

Which outputs the thresholds were chosen on: the evaluate stage runs the model in its recorded precision
(bf16 for a model trained with bf16 autocast), so ``torch`` in that precision reproduces the outputs the
thresholds were chosen on exactly; ONNX Runtime and torch fp32 differ by bf16's rounding (measured in
benchmarks/README.md: 1 threshold decision of 2,044 on the demo's test split flipped). So ``auto`` on such
a model reruns, in the recorded precision, every image with a probability within 0.02 of its threshold
(:class:`ThresholdConsistent`): its decisions are the thresholds' own, at ONNX Runtime's speed elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.deploy.export import SOURCE_KEY
from chexnet.engine import inference
from chexnet.engine.opened import LoadedModel
from chexnet.model.file import ModelInfo

log = logging.getLogger(__name__)
ENGINES = ("torch", "onnx", "auto")
SMALL_BATCH = 4  # at or below it ONNX Runtime wins on every CPU measured (benchmarks/README.md)


def _cache_root() -> Path:
    """``CHEXNET_CACHE``, else ``~/.cache/chexnet``; with no home at all (HOME unset, no passwd entry),
    a folder under the system's temporary directory, never a failure at import."""
    if os.environ.get("CHEXNET_CACHE"):
        return Path(os.environ["CHEXNET_CACHE"])
    try:
        return Path.home() / ".cache" / "chexnet"
    except RuntimeError:
        import tempfile

        return Path(tempfile.gettempdir()) / "chexnet-cache"


CACHE_DIR = _cache_root() / "onnx"


class CacheError(ChexnetError):
    """The export cache cannot be used (``CHEXNET_CACHE`` or ``~/.cache`` read-only, a file, ...)."""


@dataclass
class TorchEngine:
    model: torch.nn.Module
    device: torch.device
    precision: inference.Precision

    @property
    def name(self) -> str:
        run_as = self.precision.run_as()
        return f"torch ({run_as.dtype}, {run_as.memory_format})"

    def probabilities(self, gray: np.ndarray) -> np.ndarray:
        return inference.predict_images(self.model, gray, self.device, self.precision)


class OnnxFileError(ChexnetError):
    """An ONNX file that cannot be used for this model: missing, damaged, another model's, another size."""


class OnnxEngine:
    """An exported model (:mod:`chexnet.deploy.export`) in ONNX Runtime, all graph optimisations on.

    Checked on every open, whatever its name or origin (``--onnx``, the cache): ONNX Runtime can load it,
    it was exported from the model file whose sha256 is ``model_sha256`` (the export records it), and it
    takes this model's image size. Findings alone are not enough: a retrained model keeps its names."""

    def __init__(self, path: str | Path, info: ModelInfo, device: torch.device, threads: int = 0, *,
                 model_sha256: str):  # fmt: skip
        import onnxruntime as ort

        self.path = Path(path)
        again = f"export it again: chexnet export MODEL --out {self.path}"
        if not self.path.is_file():
            raise OnnxFileError(
                f"ONNX file {self.path} is {'a folder' if self.path.is_dir() else 'not there'}; {again}"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=[*providers, "CPUExecutionProvider"]
            )
        except Exception as error:  # ONNX Runtime's own errors are not one class: any is "cannot load"
            first = " ".join(str(error).split())[:200]
            raise OnnxFileError(
                f"{self.path} is not an ONNX model ONNX Runtime can load ({first}); {again}"
            ) from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        try:
            source = json.loads(metadata.get(SOURCE_KEY, "null")) or {}
            findings = json.loads(metadata.get("chexnet_record", "null") or "null")["labels"]
        except (ValueError, TypeError, KeyError):
            source, findings = {}, None
        if source.get("sha256") != model_sha256 or findings != list(info.labels.names):
            made_from = str(source.get("sha256", "no recorded model"))[:12]
            raise OnnxFileError(
                f"{self.path} is not this model's export (exported from {made_from}, the model file is "
                f"{model_sha256[:12]}; its findings {findings}): {again}"
            )
        shape = self.session.get_inputs()[0].shape
        if list(shape[1:]) != [1, info.image_size, info.image_size]:
            raise OnnxFileError(f"{self.path} takes {shape[1:]} pixels, the model {info.image_size} × "
                                f"{info.image_size}: {again}")  # fmt: skip

    @property
    def name(self) -> str:
        return f"onnx ({self.session.get_providers()[0]})"

    def probabilities(self, gray: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(np.asarray(gray, dtype=np.float32)[:, None])
        return self.session.run(None, {"pixels": pixels})[0]


RECHECK_MARGIN = 0.02  # bf16 vs fp32 probabilities differed by at most 0.0075 on the demo's test split


class ThresholdConsistent:
    """A fast fp32 engine whose decisions are the recorded precision's: an image with any probability
    within ``margin`` of its threshold is run again in the model's recorded precision (the outputs the
    thresholds were chosen on), and that answer is kept. Elsewhere the two cannot disagree on a decision
    unless bf16 moves a probability by more than ``margin`` (0.0075 at most, measured)."""

    def __init__(self, fast, exact: TorchEngine, cuts: np.ndarray, margin: float = RECHECK_MARGIN):
        self.fast, self.exact, self.cuts, self.margin = fast, exact, np.asarray(cuts, dtype=float), margin
        self.images = self.rechecked = 0

    @property
    def name(self) -> str:
        return f"{self.fast.name}, decisions near a threshold rechecked in {self.exact.name}"

    def probabilities(self, gray: np.ndarray) -> np.ndarray:
        p = np.array(self.fast.probabilities(gray), copy=True)
        near = (np.abs(p - self.cuts[None, :]) < self.margin).any(axis=1)
        if near.any():
            p[near] = self.exact.probabilities(np.asarray(gray)[near])
        self.images, self.rechecked = self.images + len(p), self.rechecked + int(near.sum())
        return p


def native_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_choice(device: torch.device, batch_size: int, info: ModelInfo) -> str:
    """The measured rule (module docstring): ``torch``, ``onnx``, or ``time both`` (decided by
    :func:`timed_choice` on this machine)."""
    if device.type != "cpu":
        return "torch"
    if batch_size <= SMALL_BATCH:
        return "onnx"
    recorded_bf16 = info.run_as is not None and info.run_as.dtype == "bfloat16"
    return "time both" if recorded_bf16 and native_bf16() else "onnx"


def _time(engine, pixels: np.ndarray, runs: int = 3) -> float:
    engine.probabilities(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(runs):
        engine.probabilities(pixels)
    return (time.perf_counter() - started) / runs


def timed_choice(engines: dict, info: ModelInfo, batch_size: int) -> str:
    """The faster engine at ``batch_size`` on this machine, timed once and remembered per CPU, thread
    count, architecture, image size and batch size."""
    names = [
        line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")
    ]
    cpu = names[0] if names else "unknown CPU"
    key = f"{cpu}|{torch.get_num_threads()}|{info.architecture}|{info.image_size}|{batch_size}"
    remembered = CACHE_DIR / "engine_choices.json"
    try:
        choices = json.loads(remembered.read_text()) if remembered.is_file() else {}
    except (OSError, ValueError):  # damaged or unreadable: timed again
        choices = {}
    choices = choices if isinstance(choices, dict) else {}
    if key not in choices:
        pixels = np.random.default_rng(0).integers(0, 256, (batch_size, info.image_size, info.image_size))
        seconds = {name: _time(engine, pixels.astype(np.uint8)) for name, engine in engines.items()}
        choices[key] = min(seconds, key=seconds.get)
        log.info("engine timing at batch %d: %s -> %s", batch_size, seconds, choices[key])
        try:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            io.write_json(remembered, choices)
        except OSError as error:  # timed again next time; the answer is still right
            log.warning("the engine choice is not remembered: %s cannot be written (%s)", CACHE_DIR, error)
    return choices[key]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""


def cached_export(model_path: Path, model_sha256: str) -> Path:
    """The model's ONNX export in the user's cache, keyed by the model file's sha256 (exported once)."""
    from chexnet.deploy.export import export_onnx

    target = CACHE_DIR / f"{model_path.stem}-{model_sha256[:16]}.onnx"
    fix = "set CHEXNET_CACHE to a writable folder, or use --engine torch"
    if CACHE_DIR.exists() and not CACHE_DIR.is_dir():
        raise CacheError(f"the ONNX cache {CACHE_DIR} is a file, not a folder: {fix}")
    if not target.is_file():
        log.info("exporting %s to ONNX once (%s)", model_path, target)
        try:
            export_onnx(model_path, target)
        except (OSError, ChexnetError) as error:
            raise CacheError(f"the ONNX cache {CACHE_DIR} cannot be written ({error}): {fix}") from error
    return target


def cached_onnx_engine(
    model_path: Path, info: ModelInfo, device: torch.device, model_sha256: str
) -> OnnxEngine:
    """The cached export, checked; a damaged or stale one (another model's, cut short) is exported
    again once, never trusted."""
    target = cached_export(model_path, model_sha256)
    try:
        return OnnxEngine(target, info, device, model_sha256=model_sha256)
    except OnnxFileError as error:
        log.warning("the cached export %s cannot be used (%s): exporting it again", target, error)
        target.unlink(missing_ok=True)
        return OnnxEngine(cached_export(model_path, model_sha256), info, device, model_sha256=model_sha256)


def open_engine(
    name: str, loaded: LoadedModel, batch_size: int, onnx_path: Path | None = None
) -> TorchEngine | OnnxEngine | ThresholdConsistent:
    """The engine ``name`` asks for (``auto``: :func:`auto_choice`; PyTorch for a seed checkpoint, which
    has no record to export the input from); ONNX from ``onnx_path``, else the cached export of the
    model file. Under ``auto``, when the model was opened with thresholds and is recorded in a reduced
    precision, ONNX Runtime's decisions near a threshold are rechecked in that precision
    (:class:`ThresholdConsistent`)."""
    if name not in ENGINES:
        raise ChexnetError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    info, device = loaded.info, loaded.device
    exact = TorchEngine(loaded.network, device, loaded.precision)
    unrecorded = info.source == "seed" or info.image_size is None  # nothing to export the input rule from
    if unrecorded and name == "onnx" and onnx_path is None:
        raise ChexnetError(
            f"{loaded.path} has no record beside it (a seed checkpoint): --engine onnx needs one; "
            "chexnet import --format seed writes it, or use --engine torch"
        )
    if unrecorded and name == "auto":
        return exact
    chosen = auto_choice(device, batch_size, info) if name == "auto" else name
    if chosen == "torch":
        return exact
    if onnx_path is not None:
        onnx = OnnxEngine(onnx_path, info, device, model_sha256=loaded.sha256)
    else:
        try:
            onnx = cached_onnx_engine(loaded.path, info, device, loaded.sha256)
        except ChexnetError as error:
            if name != "auto":
                raise
            log.warning("ONNX Runtime is not used: %s; running in PyTorch", error)
            return exact
    if chosen == "time both" and timed_choice({"torch": exact, "onnx": onnx}, info, batch_size) == "torch":
        return exact
    points = loaded.operating_points
    if name == "auto" and points is not None and loaded.precision.dtype is not None:
        # the thresholds were chosen on outputs in the recorded (reduced) precision: keep its decisions
        cuts = np.array([points.values[label] for label in info.labels.names])
        return ThresholdConsistent(onnx, exact, cuts)
    return onnx
