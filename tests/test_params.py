import dataclasses

import pytest

from chexnet.config.params import Params, load_params, params_from_dict
from chexnet.config.schema import ParamsError
from tests.conftest import REPO


def test_defaults_are_the_seeds_or_say_why():
    p = Params()
    assert (p.epochs, p.batch_size, p.lr, p.image_size, p.subset, p.weights) == (
        5,
        16,  # the seed's is 32: params.py says why
        "auto",  # the seed's 1e-4 with pretrained weights (tests/test_training.py)
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
