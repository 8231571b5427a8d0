"""dvc.yaml lists, for every stage, exactly the project files that stage's script imports (transitively).

Derived from the code with ``ast`` (:mod:`chexnet.pipeline.stage_deps`, which ``python
scripts/stage_deps.py`` uses to write the lists), so a new import without its dvc.yaml line fails here,
naming the stage and the file, instead of leaving stale metrics that ``dvc status`` calls up to date.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chexnet.config.params import Params
from chexnet.config.schema import file_params
from chexnet.pipeline import stage_deps
from tests.helpers import REPO


def import_closure(script: Path) -> set[str]:
    return stage_deps.import_closure(script, REPO)


STAGE_SCRIPTS = {path.stem: path for path in sorted((REPO / "stages").glob("*.py"))}
# A foreach stage (external@<name>) is checked through its template (``do``).
PIPELINE = {
    name: stage.get("do", stage)
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
}


@pytest.mark.parametrize("stage", sorted(STAGE_SCRIPTS))
def test_every_stage_depends_on_exactly_the_project_files_it_imports(stage: str):
    assert stage in PIPELINE, f"stages/{stage}.py has no stage in dvc.yaml"
    deps = {dep for dep in PIPELINE[stage].get("deps", []) if isinstance(dep, str)}
    needed = import_closure(STAGE_SCRIPTS[stage]) | {f"stages/{stage}.py"}
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} misses deps it imports: {missing}"
    listed_code = {dep for dep in deps if dep.startswith(("src/", "stages/"))}
    extra = sorted(listed_code - needed)
    assert not extra, f"dvc.yaml stage {stage!r} lists code it never imports (needless reruns): {extra}"


def test_the_closure_follows_imports_through_modules():
    closure = import_closure(STAGE_SCRIPTS["evaluate"])
    # evaluate imports the model file's module, which imports labels and io: both found through it,
    # with every package __init__ on the way
    assert {"src/chexnet/model/network.py", "src/chexnet/core/labels.py", "src/chexnet/core/io.py",
            "src/chexnet/model/__init__.py", "src/chexnet/core/__init__.py"} <= closure  # fmt: skip


@pytest.mark.parametrize("stage", ["train", "evaluate", "explain"])
def test_the_stages_after_split_read_the_cache_through_its_contract_alone(stage: str):
    """How tables are read, presets, DICOM decoding and the demo painter are prepare's and demo's."""
    closure = import_closure(STAGE_SCRIPTS[stage])
    assert "src/chexnet/data/cache.py" in closure
    data_modules = {p for p in closure if p.startswith("src/chexnet/data/") and not p.endswith("__init__.py")}
    contract = {"src/chexnet/data/cache.py", "src/chexnet/data/dataset.py", "src/chexnet/data/input_spec.py"}
    assert data_modules <= contract, data_modules


def test_the_synthetic_demo_is_the_demo_stages_alone():
    """The data layer never imports the demo (chexnet.synthetic): editing the painter reruns the demo
    stage alone, and editing a layout writer the demo stage and the check stage (which refuses an unknown
    demo.layout before any work), never prepare, the external sets or anything after them."""
    synthetic = sorted(str(p.relative_to(REPO)) for p in (REPO / "src/chexnet/synthetic").glob("*.py"))
    assert "src/chexnet/synthetic/painter.py" in synthetic
    users = {
        path: sorted(n for n, stage in PIPELINE.items() if path in stage.get("deps", []))
        for path in synthetic
    }
    assert users["src/chexnet/synthetic/painter.py"] == ["demo"]
    assert users["src/chexnet/synthetic/demo.py"] == ["demo"]
    assert all(set(stages) <= {"check", "demo"} for stages in users.values()), users


FILE_PARAMS = list(file_params(Params()))


def stages_reading(key: str) -> list[str]:
    """The stages whose dvc.yaml ``params:`` cover ``key`` (what DVC reruns when it changes)."""

    def reads(stage: dict) -> bool:
        return any(key == listed or key.startswith(f"{listed}.") for listed in stage.get("params", []))

    return [name for name, stage in PIPELINE.items() if reads(stage)]


def test_the_schema_declares_the_files_params_name():
    assert {"weights", "split.test_list", "data.bbox_table", "data.metadata_table"} <= set(FILE_PARAMS)


@pytest.mark.parametrize("key", FILE_PARAMS)
def test_a_file_named_by_a_param_is_a_dependency_of_every_stage_that_reads_the_param(key: str):
    readers = stages_reading(key)
    assert readers, f"no stage lists the param {key!r}"
    for name in readers:
        dep = f"${{{key}}}"
        assert dep in PIPELINE[name].get("deps", []), f"dvc.yaml stage {name!r} misses the dependency {dep}"


def test_the_repo_params_name_files_that_exist():
    """DVC refuses a missing dependency: a file param naming no file names the stand-in instead."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in FILE_PARAMS:
        value = raw
        for part in key.split("."):
            value = value[part]
        produced = value.startswith(("data/demo/", "data/prepared/"))  # a stage's output
        assert produced or (REPO / value).exists(), f"params.yaml {key}: {value} does not exist"


def _pipeline_outputs() -> list[str]:
    outputs = []
    for stage in PIPELINE.values():
        for key in ("outs", "metrics", "plots"):
            outputs += [item if isinstance(item, str) else next(iter(item)) for item in stage.get(key, [])]
    return outputs


def _workspace_output_reads(source: str, name: str, outputs: list[str]) -> list[str]:
    """``REPO / "<a pipeline output>"`` (or ``REPO / "metrics" / ...``) in a test file: a read of what the
    last local ``dvc repro`` wrote, not of what the repository ships."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)):
            continue
        if not (isinstance(node.left, ast.Name) and node.left.id == "REPO"):
            continue
        if isinstance(node.right, ast.Constant) and isinstance(node.right.value, str):
            target = node.right.value.rstrip("/")
            if any(out == target or out.startswith(f"{target}/") or target.startswith(f"{out}/")
                   for out in outputs):  # fmt: skip
                found.append(f"{name}:{node.lineno}: REPO / {target!r}")
    return found


def test_no_test_reads_the_outputs_a_local_dvc_repro_rewrote():
    """The README's two commands, ``dvc repro`` then the tests, compose on any CPU only if no test reads
    the workspace's pipeline outputs: a CPU without native bf16 trains in fp32 and writes other figures.
    A test of the shipped run reads ``tests.helpers.committed(path)`` (git's copy) instead."""
    outputs = _pipeline_outputs()
    assert "metrics/evaluate.json" in outputs and "models/chexnet_model.pth" in outputs
    reads = [
        hit
        for path in sorted((REPO / "tests").rglob("*.py"))
        for hit in _workspace_output_reads(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO)), outputs
        )
    ]
    assert not reads, f"tests reading the workspace's pipeline outputs (use committed()): {reads}"


def test_the_workspace_output_check_sees_a_read():
    source = 'from tests.helpers import REPO\nvalue = (REPO / "metrics/evaluate.json").read_text()\n'
    assert _workspace_output_reads(source, "fake.py", _pipeline_outputs()) == [
        "fake.py:2: REPO / 'metrics/evaluate.json'"
    ]
