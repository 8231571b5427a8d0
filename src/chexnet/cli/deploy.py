"""``chexnet export`` (a model file as ONNX) and ``chexnet serve`` (the HTTP service): their arguments
and what each runs (docs/predict.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from chexnet.pipeline import paths


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """``chexnet export`` and ``chexnet serve``."""
    from chexnet.deploy.limits import Limits

    exporting = commands.add_parser("export", help="a model file as ONNX, its record and thresholds inside")
    exporting.add_argument("model", type=Path, help="the model file, e.g. models/chexnet_model.pth")
    exporting.add_argument(
        "--out", type=Path, required=True, help="the ONNX file, e.g. models/chexnet_model.onnx"
    )
    exporting.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    exporting.add_argument("-v", "--verbose", action="store_true")
    serving = commands.add_parser(
        "serve", help="an HTTP service with a page: POST /predict, GET /model, /health"
    )
    serving.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="the model file")
    serving.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    serving.add_argument("--port", type=int, default=8000)
    serving.add_argument(
        "--token",
        default=os.environ.get("CHEXNET_TOKEN"),
        help="bearer token for /predict and /model (default: $CHEXNET_TOKEN); required off loopback",
    )
    serving.add_argument("--engine", default="auto", help="torch | onnx | auto (default)")
    serving.add_argument("--onnx", type=Path, help="the model's ONNX export (default: exported once, cached)")
    serving.add_argument(
        "--thresholds", type=Path, help="from the evaluate stage (default: thresholds.json beside --model)"
    )
    serving.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    serving.add_argument("--max-files", type=int, default=Limits.max_files, help="files per request")
    serving.add_argument("--max-request-mb", type=float, default=Limits.max_request_bytes / 2**20)
    serving.add_argument("-v", "--verbose", action="store_true")


def _export(args: argparse.Namespace) -> int:
    from chexnet.deploy.export import export_onnx, sidecar

    document = export_onnx(args.model, args.out, opset=args.opset)
    print(
        json.dumps(
            {
                "onnx": str(args.out),
                "about": str(sidecar(args.out)),
                "opset": document["opset"],
                "findings": document["output"]["findings"],
            },
            indent=2,
        )
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from chexnet.deploy.limits import Limits
    from chexnet.deploy.serve import serve

    limits = Limits(max_files=args.max_files, max_request_bytes=int(args.max_request_mb * 2**20))
    where = {"host": args.host, "port": args.port, "token": args.token}
    serve(
        args.model,
        device=args.device,
        engine=args.engine,
        limits=limits,
        thresholds=args.thresholds,
        onnx=args.onnx,
        **where,
    )
    return 0


COMMANDS = {"export": _export, "serve": _serve}
