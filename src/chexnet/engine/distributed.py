"""One process or many: the train stage runs unchanged alone or under ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; with them the stage joins a process group
(NCCL on CUDA, gloo on CPU), each process drives one device, and only rank 0 writes files.

With ``train.processes: 1`` the stage is one plain process. With more, :func:`launch` starts torchrun as
its child and every process dies with its parent (``PR_SET_PDEATHSIG``), so ``kill -9`` of ``dvc
repro``'s process group can never leave a worker training, and writing outputs, behind DVC's back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORKER_GRACE_S = 30.0  # torchrun waits as long for its workers after passing a signal on


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request: go now
        os._exit(1)


def launched() -> bool:
    """Whether this process was started by torchrun."""
    return "LOCAL_RANK" in os.environ


def without_launcher_traceback(lines: Iterable[str]) -> Iterator[str]:
    """Pass output through, minus torchrun's own ``ChildFailedError`` traceback and summary block: the
    failing worker has already said what went wrong (one line for a user error). Any other traceback,
    a worker's real bug, passes untouched."""
    held: list[str] = []
    dropping, rules = False, 0
    for line in lines:
        if dropping:
            rules += line.startswith("=" * 20)
            if rules >= 2:
                dropping, rules = False, 0
            continue
        if held:
            if line.startswith((" ", "\t")):
                held.append(line)
                continue
            if "ChildFailedError" in line:
                held, dropping = [], True
                continue
            yield from held
            held = []
        if line.startswith("Traceback (most recent call last):"):
            held = [line]
            continue
        yield line
    yield from held


def launch(processes: int, script: str, arguments: list[str]) -> int:
    """Run ``script`` under ``torchrun --standalone --nproc_per_node=processes`` as a child that dies
    with this process; return 0, or 1 after one line saying which failed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", script, *arguments]  # fmt: skip
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
    assert child.stderr is not None
    try:
        for line in without_launcher_traceback(child.stderr):
            sys.stderr.write(line)
            sys.stderr.flush()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a plain kill, the launcher watch): stop the workers
        stop_gracefully(child)
        raise
    if child.wait() != 0:
        log.error("training failed in one of its %d processes (the error is above)", processes)
        return 1
    return 0


def stop_gracefully(child: subprocess.Popen, seconds: float = WORKER_GRACE_S) -> None:
    """SIGTERM torchrun and wait for it: it passes the signal to its workers, whose cleanup removes
    their half-written outputs. Without this the launcher's exit SIGKILLs the chain (``PR_SET_PDEATHSIG``)
    and a checkpoint being written by rank 0 stays behind as a ``.tmp`` file (seen in CI). After
    ``seconds`` the chain is killed anyway."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.communicate(timeout=seconds)  # drains its stderr meanwhile, so no worker blocks on it
    except subprocess.TimeoutExpired:
        log.warning("the training processes did not stop within %.0f s of SIGTERM; killing them", seconds)
        child.kill()
        child.communicate()


def setup(device: torch.device) -> Context:
    """Join the process group when launched by torchrun with more than one process; on CUDA each
    process takes the GPU of its local rank."""
    if launched():
        die_with_parent()  # torchrun's agent is the parent: no orphan may go on training
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = device
    if chosen.type == "cuda" and world_size > 1:
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


@contextmanager
def main_first(ctx: Context) -> Iterator[None]:
    """Rank 0 runs the block first, then the others: one process fetches into a shared cache (the
    ImageNet weights) and the rest read what it left, instead of all downloading at once."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def run(processes: int, script: str, device: torch.device, work: Callable[[Context], None]) -> None:
    """``work(ctx)`` in this process (``processes: 1``, or already started by torchrun), with the process
    group set up and torn down around it; else ``script`` relaunched under torchrun with this command
    line's arguments, exiting with its status when it fails."""
    if processes > 1 and not launched():
        status = launch(processes, script, sys.argv[1:])
        if status:
            sys.exit(status)
        return
    ctx = setup(device)
    try:
        work(ctx)
    finally:
        teardown()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def sum_all(ctx: Context, *values: float) -> list[float]:
    """Sum numbers over all processes (train loss totals and counts)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_rows(ctx: Context, rows: torch.Tensor, index: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble a per-sample tensor split over processes by a DistributedSampler, in dataset order.

    Each process holds ``rows[i]`` for dataset position ``index[i]`` (the sampler pads by repeating
    samples, so some positions arrive twice; either copy is the same).
    """
    if not ctx.distributed:
        out = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype)
        out[index] = rows
        return out
    rows, index = rows.to(ctx.device), index.to(ctx.device)
    all_rows = [torch.empty_like(rows) for _ in range(ctx.world_size)]
    all_index = [torch.empty_like(index) for _ in range(ctx.world_size)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_index, index)
    out = torch.empty((total, *rows.shape[1:]), dtype=rows.dtype)
    out[torch.cat(all_index).cpu()] = torch.cat(all_rows).cpu()
    return out
