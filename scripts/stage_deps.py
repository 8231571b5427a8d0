"""Write each stage's code dependencies into dvc.yaml from the code's import closure.

    python scripts/stage_deps.py          # rewrite dvc.yaml (comments and data deps kept)
    python scripts/stage_deps.py --check  # exit 1 and name the stages whose lists differ

Run it after adding or moving an import in src/ or stages/; tests/repository/test_dvc_deps.py fails until
you do.
The closure is computed by chexnet.pipeline.stage_deps (with ast: nothing is imported or run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chexnet.pipeline.stage_deps import with_code_deps

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether dvc.yaml is up to date")
    parser.add_argument("--dvc-yaml", type=Path, default=REPO / "dvc.yaml")
    args = parser.parse_args()
    text = args.dvc_yaml.read_text(encoding="utf-8")
    wanted = with_code_deps(text, args.dvc_yaml.resolve().parent)
    if wanted == text:
        print(f"{args.dvc_yaml}: every stage's code deps are its import closure", file=sys.stderr)
        return 0
    if args.check:
        fix = "run python scripts/stage_deps.py"
        print(f"{args.dvc_yaml}: code deps differ from the imports: {fix}", file=sys.stderr)
        return 1
    temporary = args.dvc_yaml.with_suffix(".yaml.tmp")
    temporary.write_text(wanted, encoding="utf-8")
    temporary.replace(args.dvc_yaml)  # atomic: dvc never reads half a file
    print(f"{args.dvc_yaml}: code deps rewritten from the imports", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
