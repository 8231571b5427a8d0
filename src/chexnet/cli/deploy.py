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
    listening = commands.add_parser(
        "listen", help="a DICOM node: receive radiographs (C-STORE), send back an SR and heat maps"
    )
    listening.add_argument("--model", type=Path, default=paths.MODEL_FILE, help="the model file")
    listening.add_argument("--ae-title", default="CHEXNET", help="this node's AE title (default CHEXNET)")
    listening.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    listening.add_argument("--port", type=int, default=11112)
    listening.add_argument("--send-to", required=True, help="where results go: AET@HOST:PORT (C-STORE) or a "
                           "DICOMweb root URL (STOW-RS), e.g. http://127.0.0.1:8042/dicom-web")  # fmt: skip
    listening.add_argument("--token", default=os.environ.get("CHEXNET_DICOMWEB_TOKEN"),
                           help="STOW-RS bearer token (default: $CHEXNET_DICOMWEB_TOKEN)")  # fmt: skip
    listening.add_argument(
        "--basic",
        default=os.environ.get("CHEXNET_DICOMWEB_BASIC"),
        help="STOW-RS basic auth, user:password (default: $CHEXNET_DICOMWEB_BASIC)",
    )
    listening.add_argument("--allow", action="append", help="a calling AE title allowed to send (repeatable; "
                           "default: any)")  # fmt: skip
    listening.add_argument("--engine", default="auto", help="torch | onnx | auto (default)")
    listening.add_argument(
        "--onnx", type=Path, help="the model's ONNX export (default: exported once, cached)"
    )
    listening.add_argument("--thresholds", type=Path, help="default: thresholds.json beside --model")
    listening.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    listening.add_argument("--max-mb", type=float, default=64.0, help="the largest dataset accepted (MB)")
    listening.add_argument("-v", "--verbose", action="store_true")


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


def _listen(args: argparse.Namespace) -> int:
    import signal
    import threading

    from chexnet.core.errors import ChexnetError
    from chexnet.deploy.dicom_node import Destination, DicomNode
    from chexnet.deploy.engines import open_engine
    from chexnet.engine.opened import LoadedModel

    if not 0 < args.port < 65536 or not args.ae_title or len(args.ae_title) > 16:
        raise ChexnetError("--port must be 1..65535 and --ae-title 1 to 16 characters")
    from chexnet.deploy.serve import is_loopback

    if not is_loopback(args.host) and not args.allow:
        raise ChexnetError(
            f"--host {args.host} opens the node to the network: name the AE titles allowed to send with "
            "--allow (repeatable), or keep the default 127.0.0.1"
        )
    destination = Destination.parse(args.send_to, token=args.token, basic=args.basic)
    loaded = LoadedModel.open(args.model, device=args.device, thresholds=args.thresholds, layer="auto")
    engine = open_engine(args.engine, loaded, 1, args.onnx)
    node = DicomNode(loaded, destination, ae_title=args.ae_title, engine=engine, allowed=args.allow,
                     max_bytes=int(args.max_mb * 2**20))  # fmt: skip
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    node.start(args.host, args.port)
    try:
        stop.wait()
    finally:
        node.stop()
    return 0


COMMANDS = {"export": _export, "serve": _serve, "listen": _listen}
