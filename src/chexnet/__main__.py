"""``python -m chexnet``: the same command as ``chexnet`` (chexnet.cli.main)."""

from chexnet.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
