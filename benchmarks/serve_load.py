"""A load test of `chexnet serve` on loopback: C clients × R requests (one demo image each), then bad
requests; prints errors, p50/p95 latency, throughput and the server's peak RSS.

    python -m benchmarks.serve_load [--model models/chexnet_model.pth] [--clients 8] [--requests 25]
                                    [--engine auto] [--out benchmarks/results/NAME.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import peak_rss_of
from chexnet.pipeline import paths
from tests.helpers import free_port, http_get, http_post, png_bytes

TOKEN = "load-test"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    demo = sorted((paths.DEMO_DIR / "images").glob("*.png"))
    image = demo[0].read_bytes() if demo else png_bytes(0, shape=(256, 256))
    port = free_port()
    command = [sys.executable, "-m", "chexnet", "serve", "--model", str(args.model), "--port", str(port),
               "--token", TOKEN, "--engine", args.engine]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            try:
                if http_get(f"{base}/health", None)[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
            if time.monotonic() - started > 300:
                raise SystemExit("the server did not start")
        startup = time.monotonic() - started
        http_post(f"{base}/predict", [("warm.png", image)], TOKEN)

        def client(_: int) -> list[tuple[int, float]]:
            out = []
            for _ in range(args.requests):
                t = time.perf_counter()
                status, _body = http_post(f"{base}/predict", [("x.png", image)], TOKEN)
                out.append((status, time.perf_counter() - t))
            return out

        began = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            answers = [a for batch in pool.map(client, range(args.clients)) for a in batch]
        wall = time.perf_counter() - began
        latencies = sorted(t for _, t in answers)
        bad = {
            "no token": http_post(f"{base}/predict", [("x.png", image)], None)[0],
            "not an image": http_post(f"{base}/predict", [("x.txt", b"hello")], TOKEN)[0],
            "too many files": http_post(f"{base}/predict", [("x.png", image)] * 17, TOKEN)[0],
        }
        _, health = http_get(f"{base}/health", None)
        report = {
            "machine": {"cores": len(os.sched_getaffinity(0))},
            "model": str(args.model),
            "engine": health["engine"],
            "startup_s": round(startup, 1),
            "clients": args.clients,
            "requests": len(answers),
            "errors": sum(status != 200 for status, _ in answers),
            "latency_s": {
                "p50": round(statistics.median(latencies), 3),
                "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            },
            "throughput_per_s": round(len(answers) / wall, 2),
            "batches_run": health["batches_run"],
            "server_peak_rss_mb": peak_rss_of(server.pid),
            "bad_requests": bad,
            "answers_after_bad_requests": http_get(f"{base}/health", None)[0],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
