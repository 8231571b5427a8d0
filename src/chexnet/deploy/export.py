"""A model file as ONNX, with what it needs to be used right inside the file.

The graph takes what every chexnet reader already makes of an image: gray pixels fitted to the model's
square (``pixels``: float32 ``N × 1 × S × S`` in 0..255 units, the cache's and predict's), and returns
the sigmoid probabilities (``probabilities``: ``N × K``). The model's input rule (per-channel scale,
mean and std, one channel repeated to three where the model wants RGB) is folded into the graph, so an
ONNX runtime needs nothing but the resize; the batch size is dynamic. The model's record (findings,
architecture, input rule, image size, precision it was trained in, origin) and, when it sits beside the
model, ``thresholds.json`` (validation-chosen operating points) travel as ONNX metadata
(``chexnet_record``, ``chexnet_thresholds``) and in a JSON file beside the ONNX file.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data.input_spec import InputSpec
from chexnet.model.file import ModelInfo, load_model
from chexnet.model.thresholds import operating_points

log = logging.getLogger(__name__)
OPSET = 18  # ONNX Runtime 1.32 runs it on CPU and CUDA; recorded in the file and its JSON
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
FORMAT = "chexnet-onnx/1"
SOURCE_KEY = "chexnet_source_model"  # metadata: {"file", "sha256"} of the model file it was exported from


class WithInputRule(nn.Module):
    """The network with its input rule in front and its sigmoid behind: ``pixels → probabilities``."""

    def __init__(self, network: nn.Module, spec: InputSpec):
        super().__init__()
        self.network = network
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        std = torch.tensor(spec.std, dtype=torch.float32)
        shape = (1, spec.channels, 1, 1)
        self.register_buffer("scale", (1.0 / (spec.scale * std)).view(shape))
        self.register_buffer("shift", (-mean / std).view(shape))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network.logits(pixels * self.scale + self.shift))


def embedded_thresholds(model_path: Path, info: ModelInfo) -> dict[str, Any] | None:
    """The operating points an export carries, read by predict's and serve's rule
    (:func:`chexnet.model.thresholds.operating_points`): evaluate's for this model, else the record's
    (an imported model's), else none."""
    chosen = operating_points(model_path, info)
    if chosen.kind == "validation":
        return chosen.document
    return {"source": "record", **info.thresholds} if chosen.kind == "record" else None


def export_onnx(model_path: str | Path, out: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Write ``out`` (ONNX) and ``out`` with ``.json`` (what it is); return that JSON document."""
    import onnx

    model_path, out = Path(model_path), Path(out)
    model, info = load_model(model_path)
    if info.image_size is None:
        raise ChexnetError(f"{model_path} records no image size (a seed checkpoint): import it first "
                           "(chexnet import --format seed) so that its input is known")  # fmt: skip
    wrapped = WithInputRule(model.eval(), info.input).eval()
    example = torch.full((2, 1, info.image_size, info.image_size), 127.0)
    io.require_writable_file(out, "--out")
    # the ONNX file and its JSON are renamed into place together, after both are complete
    with io.atomic_path(sidecar(out)) as about_file, io.atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        torch.onnx.export(
            wrapped, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
            dynamo=False,
        )  # fmt: skip
        graph = onnx.load(str(tmp))
        document = {
            "format": FORMAT,
            "opset": opset,
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", 1, info.image_size, info.image_size],
                "dtype": "float32",
                "units": "gray pixels fitted to the square, 0..255",
                "resize": info.input.resize,
            },
            "output": {
                "name": OUTPUT_NAME,
                "shape": ["batch", len(info.labels)],
                "findings": list(info.labels.names),
            },
            "record": info.as_dict(),
            "thresholds": embedded_thresholds(model_path, info),
            "source_model": {"file": str(model_path), "sha256": io.sha256_of(model_path)},
        }
        about = {k: document[k] for k in ("format", "opset", "input", "output")}
        metadata = {
            "chexnet_record": document["record"],
            "chexnet_thresholds": document["thresholds"],
            "chexnet_export": about,
            SOURCE_KEY: document["source_model"],  # which model file it is: checked on every use
        }
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        graph.doc_string = f"chexnet {info.architecture}: {len(info.labels)} findings, {info.image_size} px"
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
        io.write_json(about_file, document)
    return document


def sidecar(onnx_path: str | Path) -> Path:
    """The JSON beside an ONNX file: ``model.onnx`` → ``model.onnx.json``."""
    return Path(os.fspath(onnx_path) + ".json")
