"""What every stage script shares: ``--help``, ``--params``, logging on stderr, clean errors.

A user error (bad params, a missing column, an unknown label, a checkpoint that does not fit) ends the
stage with one clear line on stderr and exit status 1, not a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable

from chexnet.errors import ChexnetError
from chexnet.params import Params, load_params

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


def run_stage(description: str, body: Callable[[Params], None]) -> None:
    """Parse arguments, load params, run ``body``; turn user errors into one line and exit 1."""
    parser = stage_parser(description)
    args = parser.parse_args()
    setup_logging(args.verbose)
    try:
        body(load_params(args.params))
    except ChexnetError as error:
        if args.verbose:
            raise
        logging.getLogger("chexnet").error("%s", error)
        sys.exit(1)
    except OSError as error:
        # The machine's, not the code's: no permission, a read-only or full disk. Say where, in one line.
        if args.verbose or error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = error.filename or "an output file"
        logging.getLogger("chexnet").error("cannot write %s: %s; check its permissions and free space",
                                           where, error.strerror)  # fmt: skip
        sys.exit(1)
