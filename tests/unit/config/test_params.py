import dataclasses

import pytest

from chexnet.config.params import Params, load_params, params_from_dict
from chexnet.config.schema import ParamsError
from tests.helpers import REPO, param_leaves, set_dotted


def test_defaults_are_the_seeds_or_say_why():
    p = Params()
    assert (p.epochs, p.batch_size, p.lr, p.image_size, p.subset, p.weights) == (
        5,
        16,  # the seed's is 32: params.py says why
        "auto",  # the seed's 1e-4 with pretrained weights (tests/unit/engine/test_training.py)
        224,
        20000,
        "imagenet",
    )
    assert (p.data.preset, p.data.label_column) == ("seed", "")  # "" = the preset's column, patologia


def test_repo_params_yaml_matches_schema_and_defaults():
    """Every default, except the one addition the repo makes: the demo's external test set (the schema
    has none, so a params.yaml that names none runs none; docs/evaluation.md)."""
    p = load_params(REPO / "params.yaml")
    assert list(p.evaluate.external) == ["demo_padchest"]
    assert p.evaluate.external["demo_padchest"].table.startswith("data/demo/external/")
    without = dataclasses.replace(p, evaluate=dataclasses.replace(p.evaluate, external={}))
    assert without == Params()


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"'data\.tabel'"):
        params_from_dict({"data": {"tabel": "x.parquet"}})
    with pytest.raises(ParamsError, match="'epoch'"):
        params_from_dict({"epoch": 3})


def test_wrong_type_and_range_are_errors():
    with pytest.raises(ParamsError, match="epochs must be int"):
        params_from_dict({"epochs": "ten"})
    with pytest.raises(ParamsError, match=r"epochs must be in \[0, inf\], got -1"):
        params_from_dict({"epochs": -1})
    with pytest.raises(ParamsError, match="sum to less than 1"):
        params_from_dict({"split": {"val_fraction": 0.5, "test_fraction": 0.5}})
    assert params_from_dict({"lr": 1}).lr == 1.0  # ints are fine where floats are expected


def test_choices_are_checked():
    with pytest.raises(ParamsError, match=r"train\.amp must be"):
        params_from_dict({"train": {"amp": "fp8"}})
    with pytest.raises(ParamsError, match=r"train\.compile_mode must be one of default, reduce-overhead"):
        params_from_dict({"train": {"compile_mode": "fast"}})
    assert params_from_dict({"train": {"compile_mode": "reduce-overhead"}}).train.compile_mode == (
        "reduce-overhead"
    )


# Every param, out of its declared range: the cases come from the schema (a param added tomorrow is covered).
LEAVES = param_leaves()


def _bad_values(hint, meta) -> list:
    values = []
    low, high = meta.get("low"), meta.get("high")
    kind = int if hint is int else float
    if low is not None:
        values.append(kind(low) if meta.get("low_open") else kind(low - 1 if kind is int else low - 0.5))
    if high is not None:
        values.append(kind(high) if meta.get("high_open") else kind(high + 1 if kind is int else high + 0.5))
    if meta.get("choices"):
        values.append("definitely-not-allowed")
    if meta.get("pattern"):
        values.append("   ")  # every text pattern here needs a visible character
    return values


def _declared(meta: dict) -> bool:
    declared = ("free", "choices", "pattern", "low", "high")
    return bool(meta) and any(meta[k] is not None and meta[k] is not False for k in declared)


def test_every_param_declares_what_it_allows():
    undeclared = [key for key, hint, meta in LEAVES if hint in (int, float, str) and not _declared(meta)]
    assert not undeclared, f"declare a range or choices with params.param(...) for: {undeclared}"


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, h, m in LEAVES for v in _bad_values(h, m)])
def test_an_out_of_range_param_is_refused_naming_its_key(key: str, value):
    raw = set_dotted({}, key, [value] if key == "data.views" else value)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        params_from_dict(raw)


def test_the_stand_in_files_read_as_no_file_and_imagenet():
    none = "inputs/none"
    p = params_from_dict({"weights": none, "split": {"test_list": none}, "data": {"bbox_table": f"./{none}"}})
    assert p.weights == "none" and p.split.test_list == "" and p.data.bbox_table == ""
    assert params_from_dict({"weights": "inputs/imagenet"}).weights == "imagenet"
    assert params_from_dict({"weights": "models/ft.pth"}).weights == "models/ft.pth"
    with pytest.raises(ParamsError, match=r"split\.test_list"):
        params_from_dict({"split": {"method": "official", "test_list": "inputs/none"}})


def test_an_unquoted_off_reads_as_off():
    """YAML reads `amp: off` (and `dvc exp run -S train.amp=off`) as false."""
    assert load_params_text("train: {amp: off}").train.amp == "off"
    with pytest.raises(ParamsError, match=r"train\.amp"):
        load_params_text("train: {amp: on}")


def load_params_text(text: str):
    import yaml

    return params_from_dict(yaml.safe_load(text))


def test_the_sections_are_listed_once_in_file_order():
    from chexnet.config.common import SECTIONS
    from chexnet.config.params import SECTION_CLASSES

    assert tuple(cls.SECTION for cls in SECTION_CLASSES) == SECTIONS
    assert [f.name for f in dataclasses.fields(Params)][-len(SECTIONS) :] == list(SECTIONS)


# --- DVC's own `-S` rewrite on the committed params.yaml (the design card's `dvc exp run -S epochs=10`) ---


def _documented_set_overrides() -> list[list[str]]:
    """Every ``dvc exp run ... -S key=value`` the README and docs/ show, one list of overrides a command;
    a sweep (``-S lr=a,b``) is taken at its first value, as each queued experiment gets one."""
    import re

    commands = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in page.read_text(encoding="utf-8").splitlines():
            if "dvc exp run" not in line:
                continue
            pairs = re.findall(r"-S\s+([A-Za-z_][\w.]*)=([^\s`|&]+)", line)
            pairs = [(key, value) for key, value in pairs if "..." not in value]  # placeholders
            if pairs:
                commands.append([f"{key}={value.split(',')[0]}" for key, value in pairs])
    return commands


def test_the_cards_set_param_rewrites_the_committed_params_and_changes_only_that_value():
    from chexnet.config.schema import read_params_file
    from chexnet.pipeline.check import dvc_set_params, set_param_problems

    assert set_param_problems(REPO / "params.yaml") == []
    before = read_params_file(REPO / "params.yaml")
    after = dvc_set_params(REPO / "params.yaml", ["epochs=10"])
    assert after["epochs"] == 10
    assert {**after, "epochs": before["epochs"]} == before
    assert load_params(REPO / "params.yaml") == dataclasses.replace(params_from_dict(after), epochs=5)


def test_every_documented_set_param_command_survives_dvcs_rewrite_and_the_schema():
    from chexnet.pipeline.check import dvc_set_params

    commands = _documented_set_overrides()
    assert ["epochs=10"] in commands and ["lr=0.0001", "batch_size=16"] in commands, commands
    for overrides in commands:
        rewritten = dvc_set_params(REPO / "params.yaml", overrides)
        params_from_dict(rewritten)  # every documented value is one the schema takes


def test_a_params_file_dvcs_rewrite_would_break_is_named_by_chexnet_check(tmp_path):
    """The bug of round three: a multi-line flow mapping whose keys hold spaces comes back unreadable."""
    from chexnet.pipeline.check import set_param_problems

    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    aliases = ", ".join(f"finding number {i}: Finding_{i}" for i in range(12))
    broken = text.replace("  aliases: {}  ", "  aliases: {" + aliases + "}  ", 1)
    assert broken != text
    (tmp_path / "params.yaml").write_text(broken, encoding="utf-8")
    assert load_params(tmp_path / "params.yaml").data.aliases  # readable as written ...
    problems = set_param_problems(tmp_path / "params.yaml")  # ... but not after `dvc exp run -S`
    assert len(problems) == 1 and "dvc exp run -S" in problems[0] and "block style" in problems[0]
    assert str(tmp_path / "params.yaml") in problems[0] and "chexnet-check-" not in problems[0]


def _another_value(spec: dataclasses.Field):
    """A value of the field's type other than its default, allowed by its declared choices/pattern."""
    meta, default = spec.metadata, spec.default if spec.default is not dataclasses.MISSING else None
    if spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    choices = meta.get("choices")
    if isinstance(default, list):
        return [choices[0]] if choices else ["Hernia"]
    if isinstance(default, dict):
        return {"Mass": choices[-1]} if choices else {"Mass": "Nodule"}
    if isinstance(default, bool):
        return not default
    if isinstance(default, float):
        return 0.5
    if choices:
        return next(choice for choice in choices if choice != default)
    if meta.get("file"):
        return "inputs/other.csv"
    return {"preset": "nih", "no_finding": "Normal"}.get(spec.name, "other")


def test_every_option_of_a_data_source_is_taken_by_data_and_by_an_external_set():
    """One type (DataSource) behind ``data:`` and ``evaluate.external.<name>``: every option it declares
    is accepted by both sections and arrives where each is read."""
    from chexnet.config.data import DataSource

    for spec in dataclasses.fields(DataSource):
        value = _another_value(spec)
        as_data = params_from_dict({"data": {spec.name: value}}).data
        entry = {"table": "t.csv", "images": "i", spec.name: value}
        as_external = params_from_dict({"evaluate": {"external": {"x": entry}}}).evaluate.external["x"]
        assert getattr(as_data, spec.name) == getattr(as_external, spec.name) == value, spec.name
        assert as_data.label_options("from_data").__class__ is as_external.label_options().__class__


def test_an_external_sets_label_options_are_read_as_datas_are():
    """Per-finding uncertain policies and ignored findings: the external set passes them on as data does
    (it had only one policy and no ignore list before one type held both)."""
    entry = {"table": "t.csv", "images": "i", "uncertain": {"Edema": "ones", "default": "zeros"},
             "ignore_findings": ["Hernia"]}  # fmt: skip
    params = params_from_dict({"data": entry, "evaluate": {"external": {"x": entry}}})
    external, data = params.evaluate.external["x"].label_options(), params.data.label_options("from_data")
    assert external.uncertain == data.uncertain == {"Edema": "ones", "default": "zeros"}
    assert external.ignore == data.ignore == ("Hernia",)
    assert (external.min_positives, external.drop_rare) == (1, True)  # an external set keeps every finding
    with pytest.raises(ParamsError, match=r"evaluate\.external\.uncertain"):
        params_from_dict({"evaluate": {"external": {"x": {**entry, "uncertain": {"Edema": "maybe"}}}}})
