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
benchmarks/README.md: how many threshold decisions of the demo's test split flip).
"""

from __future__ import annotations

import hashlib
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
from chexnet.engine import inference
from chexnet.model.file import ModelInfo

log = logging.getLogger(__name__)
ENGINES = ("torch", "onnx", "auto")
SMALL_BATCH = 4  # at or below it ONNX Runtime wins on every CPU measured (benchmarks/README.md)
CACHE_DIR = Path(os.environ.get("CHEXNET_CACHE", Path.home() / ".cache" / "chexnet")) / "onnx"


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


class OnnxEngine:
    """An exported model (:mod:`chexnet.deploy.export`) in ONNX Runtime, all graph optimisations on."""

    def __init__(self, path: str | Path, info: ModelInfo, device: torch.device, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else []
        self.session = ort.InferenceSession(
            str(self.path), options, providers=[*providers, "CPUExecutionProvider"]
        )
        record = self.session.get_modelmeta().custom_metadata_map.get("chexnet_record")
        findings = json.loads(record)["labels"] if record else None
        if findings != list(info.labels.names):
            raise ChexnetError(
                f"{self.path} is not this model's export (its findings {findings}, the model's "
                f"{list(info.labels.names)}): export it again with chexnet export"
            )

    @property
    def name(self) -> str:
        return f"onnx ({self.session.get_providers()[0]})"

    def probabilities(self, gray: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(np.asarray(gray, dtype=np.float32)[:, None])
        return self.session.run(None, {"pixels": pixels})[0]


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
    choices = json.loads(remembered.read_text()) if remembered.is_file() else {}
    if key not in choices:
        pixels = np.random.default_rng(0).integers(0, 256, (batch_size, info.image_size, info.image_size))
        seconds = {name: _time(engine, pixels.astype(np.uint8)) for name, engine in engines.items()}
        choices[key] = min(seconds, key=seconds.get)
        log.info("engine timing at batch %d: %s -> %s", batch_size, seconds, choices[key])
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        io.write_json(remembered, choices)
    return choices[key]


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""


def cached_export(model_path: Path) -> Path:
    """The model's ONNX export in the user's cache, keyed by the model file's sha256 (exported once)."""
    from chexnet.deploy.export import export_onnx

    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    target = CACHE_DIR / f"{model_path.stem}-{digest}.onnx"
    if not target.is_file():
        log.info("exporting %s to ONNX once (%s)", model_path, target)
        export_onnx(model_path, target)
    return target


def open_engine(
    name: str, model: torch.nn.Module, info: ModelInfo, model_path: Path, device: torch.device,
    precision: inference.Precision, batch_size: int, onnx_path: Path | None = None,
) -> TorchEngine | OnnxEngine:  # fmt: skip
    """The engine ``name`` asks for (``auto``: :func:`auto_choice`; PyTorch for a seed checkpoint, which
    has no record to export the input from); ONNX from ``onnx_path``, else the cached export of
    ``model_path``."""
    if name not in ENGINES:
        raise ChexnetError(f"--engine must be one of {', '.join(ENGINES)}, got {name!r}")
    unrecorded = info.source == "seed" or info.image_size is None  # nothing to export the input rule from
    if unrecorded and name == "onnx" and onnx_path is None:
        raise ChexnetError(
            f"{model_path} has no record beside it (a seed checkpoint): --engine onnx needs one; "
            "chexnet import --format seed writes it, or use --engine torch"
        )
    if unrecorded and name == "auto":
        return TorchEngine(model, device, precision)
    chosen = auto_choice(device, batch_size, info) if name == "auto" else name
    if chosen == "torch":
        return TorchEngine(model, device, precision)
    onnx = OnnxEngine(onnx_path or cached_export(model_path), info, device)
    if chosen == "time both":
        engines = {"torch": TorchEngine(model, device, precision), "onnx": onnx}
        return engines[timed_choice(engines, info, batch_size)]
    return onnx
