"""``chexnet check``: what DVC cannot say clearly, said before ``dvc repro`` starts.

DVC interpolates ``${...}`` params into ``dvc.yaml`` and checks every dependency before any stage runs,
so an empty file param ends ``dvc repro`` with a bare "ERROR: unexpected error", and a missing file with
a message that names no param. A preset, layer or device that does not exist would only fail in the stage that
uses it, after the stages before it ran. This reads ``params.yaml`` as the stages do (the schema, YAML
1.2 as DVC reads it) and checks each of these up front, one line each.

It also checks that ``params.yaml`` survives ``dvc exp run -S``: DVC applies ``-S`` by re-dumping the
file through ruamel, which re-wraps long flow mappings (``{pleural effusion: Effusion, ...}``, keys with
spaces) into YAML it then cannot read, so every ``-S`` on every param would fail before a stage runs.
:func:`set_param_problems` runs DVC's own rewrite on a copy and compares the meaning.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from chexnet.config.params import Params, load_params
from chexnet.config.schema import IMAGENET_FILE, NO_FILE, file_params, read_params_file, read_yaml
from chexnet.core.errors import ChexnetError
from chexnet.pipeline.paths import demo_external_refusals, demo_hint


def pipeline_outputs(dvc_yaml: Path) -> list[Path]:
    """Paths some stage writes (its ``outs``, ``metrics``, ``plots``): they need not exist before a run."""
    if not dvc_yaml.is_file():
        return []
    stages = (read_yaml(dvc_yaml.read_text(encoding="utf-8"), dvc_yaml) or {}).get("stages", {})
    outputs = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                outputs.extend(Path(k) for k in (entry if isinstance(entry, dict) else {entry: None}))
    return outputs


def _external_problems(params: Params, made: list[Path]) -> list[str]:
    """Each external test set's preset, and its files (dvc.yaml lists them as external@<name> deps)."""
    from chexnet.data.presets import registry

    problems = demo_external_refusals(params.data, params.evaluate.external)
    for name, spec in params.evaluate.external.items():
        key = f"evaluate.external.{name}"
        try:
            registry.get(spec.preset, f"{key}.preset")
        except ChexnetError as error:
            problems.append(str(error))
        for field in ("table", "images", "metadata_table", "demographics_table", "bbox_table"):
            value = getattr(spec, field)
            path = Path(value)
            if value and not path.exists() and not any(path == out or out in path.parents for out in made):
                stand_in = f", or write {NO_FILE} for no file" if field not in ("table", "images") else ""
                problems.append(
                    f"params: {key}.{field}: {value} does not exist (dvc repro would stop on it); "
                    f"fix the path{stand_in}"
                )
    return problems


def dvc_set_params(params_file: str | Path, overrides: list[str]) -> Any:
    """``params_file`` as ``dvc exp run -S OVERRIDE ...`` would leave it, read back as the stages read it:
    DVC's own rewrite (``dvc.utils.hydra.apply_overrides``) applied to a copy, never to the file."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="chexnet-check-") as folder:
        copy = Path(folder) / "params.yaml"
        shutil.copyfile(params_file, copy)
        try:
            apply_overrides(copy, overrides)
            return read_params_file(copy)
        except Exception as error:  # name the user's file, not the copy
            raise ChexnetError(str(error).replace(str(copy), str(params_file))) from error


def set_param_problems(params_file: str | Path) -> list[str]:
    """Whether ``dvc exp run -S`` can rewrite ``params_file`` and read it back with the same meaning
    (a no-op ``-S <its first scalar key>=<its value>``: every value must come back equal)."""
    params_file = Path(params_file)
    try:
        import dvc.utils.hydra  # noqa: F401
    except ImportError:  # chexnet installed without DVC: nothing rewrites the file
        return []
    original = read_params_file(params_file) or {}
    scalars = [k for k, v in original.items() if isinstance(v, (int, float, str, bool))] if original else []
    if not scalars:  # nothing `-S` could set without adding a key: the rewrite is not reached
        return []
    key = scalars[0]
    fix = ("write each multi-line {a: b, ...} mapping or [a, b, ...] list in params.yaml in block style "
           "(one 'key: value' or '- item' a line)")  # fmt: skip
    try:
        value = original[key]
        value = str(value).lower() if isinstance(value, bool) else value
        rewritten = dvc_set_params(
            params_file, [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"]
        )
    except Exception as error:  # DVC's rewrite or the read-back failed: any error is the finding
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [f"params: {params_file}: `dvc exp run -S` would rewrite it into YAML that cannot be read "
                f"({first}); {fix}"]  # fmt: skip
    if rewritten != original:
        changed = sorted(k for k in set(original) | set(rewritten) if original.get(k) != rewritten.get(k))
        return [f"params: {params_file}: `dvc exp run -S` would change the meaning of {changed}; {fix}"]
    return []


def check(params_file: str | Path = "params.yaml", dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """The problems found, one line each (empty: ``dvc repro`` will get past its checks)."""
    from chexnet.data.presets import registry
    from chexnet.engine.inference import resolve_device
    from chexnet.model.initial import planned_architecture
    from chexnet.model.network import build_network, check_target_layer
    from chexnet.synthetic import layouts

    try:
        params = load_params(params_file)
    except ChexnetError as error:
        return [str(error)]
    problems = set_param_problems(params_file) if Path(params_file).is_file() else []
    made = pipeline_outputs(Path(dvc_yaml))
    keywords = {"", "none", "imagenet", NO_FILE, IMAGENET_FILE}
    for key, value in file_params(params).items():
        path = Path(value)
        made_here = any(path == out or out in path.parents for out in made)
        if value in keywords or path.exists() or (made_here and not demo_hint(path, params.data)):
            continue
        problems.append(
            f"params: {key}: {value} does not exist{demo_hint(path, params.data)} (dvc repro would stop on "
            f"this dependency); fix the path, or write {NO_FILE} for no file"
        )
    problems += _external_problems(params, made)
    backbone: list[str] = []  # the architecture the run builds, once known

    def network():
        return build_network(backbone[0], 2)

    for what, run in (
        ("data.preset", lambda: registry.get(params.data.preset)),
        ("demo.layout", lambda: layouts.get(params.demo.layout)),
        ("demo.external_layout", lambda: layouts.get(params.demo.external_layout, "demo.external_layout")),
        ("architecture", lambda: backbone.append(planned_architecture(params.weights, params.architecture))),
        (
            "explain.target_layer",
            lambda: backbone and check_target_layer(network(), params.explain.target_layer),
        ),
        ("device", lambda: resolve_device(params.device)),
    ):
        try:
            run()
        except ChexnetError as error:  # a message that names its param already is kept as it is
            message = str(error)
            problems.append(message if message.startswith("params:") else f"params: {what}: {message}")
    return problems
