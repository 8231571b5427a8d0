"""What every stage script shares: ``--help``, ``--params``, logging on stderr, clean errors, its end.

A user error (bad params, a missing column, an unknown label, a checkpoint that does not fit) ends the
stage with one clear line on stderr and exit status 1, not a traceback. Ctrl-C and SIGTERM end it with
one line and status 130 / 143 after cleanup (no half output), it stops when ``dvc`` is gone, and it fails
when its params changed on disk while it ran (:mod:`chexnet.pipeline.lifecycle`).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from chexnet.config.stage import load_stage_params
from chexnet.core.errors import ChexnetError
from chexnet.pipeline import lifecycle

_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def record(stage: str, full: dict) -> None:
    """A stage's report and headline metrics, where the pipeline keeps them (``reports/<stage>.json``,
    ``metrics/<stage>.json``): the library's :func:`chexnet.pipeline.headlines.write` is told the paths."""
    from chexnet.pipeline import headlines, paths

    headlines.write(stage, full, report=paths.report_file(stage), metrics=paths.metrics_file(stage))


def _out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def run_stage(
    description: str, body: Callable[..., None], sections: tuple[type, ...], argument: str | None = None
) -> None:
    """Parse arguments, load the top level of the params and the ``sections`` (their schema classes) the
    stage reads, run ``body``; turn user errors into one line and exit 1. ``argument``: one positional
    argument the stage takes (a foreach stage's ``${key}``), passed to ``body`` after the params."""
    parser = stage_parser(description)
    if argument:
        parser.add_argument(argument)
    args = parser.parse_args()
    setup_logging(args.verbose)
    log = logging.getLogger("chexnet")
    worker = "LOCAL_RANK" in os.environ  # under torchrun: the launcher process watches and checks
    lifecycle.handle_sigterm()
    if not worker:
        lifecycle.watch_launcher()
    stage = Path(sys.argv[0]).stem
    try:
        keys = lifecycle.stage_param_keys(stage)
        snapshot = lifecycle.params_snapshot(args.params, keys)
        extra = (getattr(args, argument),) if argument else ()
        body(load_stage_params(args.params, sections), *extra)
        if not worker:
            lifecycle.require_unchanged(args.params, keys, snapshot)
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, lifecycle.Terminated)
        log.error("%s stage %s: stopped; no half output was left (rerun dvc repro to resume or restart)",
                  stage, "terminated" if terminated else "interrupted")  # fmt: skip
        sys.exit(143 if terminated else 130)
    except ChexnetError as error:
        if args.verbose:
            raise
        log.error("%s", error)
        sys.exit(1)
    except OSError as error:
        # The machine's, not the code's: no permission, a read-only or full disk. Say where, in one line.
        if args.verbose or error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = error.filename or "an output file"
        log.error("cannot write %s: %s; check its permissions and free space", where, error.strerror)
        sys.exit(1)
    except (MemoryError, RuntimeError) as error:
        if args.verbose or not _out_of_memory(error):
            raise
        log.error("%s stage ran out of memory (%s); lower image_size or batch_size, or use a larger machine",
                  stage, " ".join(str(error).split())[:200] or type(error).__name__)  # fmt: skip
        sys.exit(1)
