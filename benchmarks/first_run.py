"""A newcomer's first ``dvc repro``: wall time and peak memory of every stage, then the figures it reached.

Clones this repository (committed files only, as ``git clone`` would give) into a temporary folder and
runs the default pipeline there, one stage at a time in dvc.yaml's order, each as ``dvc repro -s
STAGE``, timing it and reading its peak RSS (the largest process of the stage's tree, from ``wait4``).
Then a no-op ``dvc repro`` (timed), and the test mean AUROC with its interval and the pointing game
from the clone's metrics. Torch's cache is pointed at an empty folder, so ImageNet weights that happen
to sit in this machine's cache are not used: the run is the offline, random-initialisation case.

    python -m benchmarks.first_run                     # the defaults, as committed
    python -m benchmarks.first_run --set demo.n_images=800 --set train.amp=off   # what-ifs
    python -m benchmarks.first_run --rev 4d8afe6       # an earlier commit, for a before/after
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``command``; return (wall seconds, peak RSS in GB of its largest process, output tail)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # usage covers the reaped descendants too (max RSS)
        wall = time.perf_counter() - started
        log.seek(0)
        tail = log.read()[-3000:]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{tail}")
    return wall, usage.ru_maxrss / 1024**2, tail


def set_param(params: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to clone (default HEAD)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="chexnet-first-run-"))
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", args.rev], cwd=work, check=True)
    if args.set:
        params = yaml.safe_load((work / "params.yaml").read_text())
        for assignment in args.set:
            set_param(params, assignment)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", TORCH_HOME=tempfile.mkdtemp(prefix="empty-torch-home-"))
    env["PYTHONPATH"] = str(work / "src")  # the clone's library, not the one this venv has installed
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's python
    stages = list(yaml.safe_load((work / "dvc.yaml").read_text())["stages"])

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=work, capture_output=True, text=True)
    memory_gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3
    cores = len(os.sched_getaffinity(0))
    machine = {"cores": cores, "cpu": platform.machine(), "memory_gb": round(memory_gb)}
    figures: dict = {"rev": rev.stdout.strip(), "set": args.set, "machine": machine, "stages": {}}
    total = 0.0
    for stage in stages:
        wall, rss, _ = run_measured(["dvc", "repro", "-s", stage], work, env)
        total += wall
        figures["stages"][stage] = {"seconds": round(wall, 1), "peak_rss_gb": round(rss, 2)}
        print(f"{stage:10s} {wall:7.1f} s  {rss:5.2f} GB", file=sys.stderr, flush=True)
    figures["total_seconds"] = round(total, 1)
    figures["peak_rss_gb"] = max(s["peak_rss_gb"] for s in figures["stages"].values())
    noop, _, output = run_measured(["dvc", "repro"], work, env)
    figures["noop_seconds"] = round(noop, 2)
    figures["noop_ran_a_stage"] = "Running stage" in output

    evaluate = json.loads((work / "metrics/evaluate.json").read_text())["auroc"]["macro"]
    explain = json.loads((work / "metrics/explain.json").read_text())
    train = json.loads((work / "metrics/train.json").read_text())
    figures["test_mean_auroc"] = {k: evaluate[k] for k in ("value", "ci_low", "ci_high")}
    figures["explain"] = explain
    figures["pretrained"] = train.get("pretrained")
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
