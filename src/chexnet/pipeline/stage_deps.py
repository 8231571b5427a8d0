"""Each stage's code dependencies in ``dvc.yaml``, derived from the code rather than edited by hand.

A stage depends on its script and on every project module that script imports, directly or not
(function-level imports too: they run). Listed by hand, the list drifts: a new import without its line
leaves stale results that ``dvc status`` calls up to date, and a stale line reruns a stage for a file it
never reads. So the closure is computed here with ``ast`` (nothing is imported or run), written into
``dvc.yaml`` by ``python scripts/stage_deps.py`` (comments and the other deps kept as they are), and
checked by tests/repository/test_dvc_deps.py.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

CODE_PREFIXES = ("src/", "stages/")


def _module_file(src: Path, name: str) -> Path | None:
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path, src: Path) -> set[Path]:
    """Project files ``path`` imports: ``import chexnet.x``, ``from chexnet import x``, ``from chexnet.x
    import y``, anywhere in the file. Importing ``chexnet.x`` runs every package ``__init__`` on the way."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "chexnet":
                continue
            for depth in range(1, len(parts) + 1):
                module = _module_file(src, ".".join(parts[:depth]))
                if module is not None:
                    found.add(module)
    return found


def import_closure(script: Path, repo: Path) -> set[str]:
    """Every project file ``script`` runs when imported, as paths relative to ``repo``."""
    src, seen, todo = repo / "src", set(), [script]
    while todo:
        for module in imported_files(todo.pop(), src):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return {str(path.relative_to(repo)) for path in seen}


def code_deps(stage: str, repo: Path) -> list[str]:
    """What ``dvc.yaml`` lists as the code of ``stage``: its script, then its import closure, sorted."""
    script = repo / "stages" / f"{stage}.py"
    return [f"stages/{stage}.py", *sorted(import_closure(script, repo))]


def _yaml():
    from ruamel.yaml import YAML  # DVC's own YAML library: a round trip keeps comments and layout

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def with_code_deps(text: str, repo: Path) -> str:
    """``dvc.yaml``'s text with every stage's code deps replaced by :func:`code_deps` (a foreach stage
    through its ``do`` template); its other deps (data, files named by params) kept in their order after
    the code."""
    yaml = _yaml()
    document = yaml.load(text)
    for name, stage in document["stages"].items():
        body = stage.get("do", stage)
        if not (repo / "stages" / f"{name}.py").is_file():
            continue
        deps = body.get("deps") or []
        others = [dep for dep in deps if not (isinstance(dep, str) and dep.startswith(CODE_PREFIXES))]
        deps.clear()
        deps.extend([*code_deps(name, repo), *others])
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
