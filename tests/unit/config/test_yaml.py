"""Params read as DVC reads them: one YAML reading (YAML 1.2 words, numbers as people type them) and the
stand-in file."""

from __future__ import annotations

from pathlib import Path

import pytest

from chexnet.config.params import load_params, params_from_dict
from chexnet.config.schema import ParamsError, read_yaml


# --- params: one YAML reading, DVC's ----------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["1e-4", "1E-4", ".0001", "3e-4", "1.0e-4", "0.0001"])
def test_learning_rates_as_people_type_them_are_numbers_as_dvc_reads_them(tmp_path: Path, spelling: str):
    from dvc.utils.serialize import parse_yaml

    (tmp_path / "params.yaml").write_text(f"lr: {spelling}\n")
    assert load_params(tmp_path / "params.yaml").lr == pytest.approx(float(spelling))
    assert load_params(tmp_path / "params.yaml").lr == parse_yaml(f"lr: {spelling}", "p")["lr"]


def test_yaml_1_2_words_are_text_as_in_dvc():
    from dvc.utils.serialize import parse_yaml

    text = "train:\n  amp: off\n"
    assert read_yaml(text, "p") == parse_yaml(text, "p")
    assert params_from_dict(read_yaml(text, "p")).train.amp == "off"


def test_a_quoted_number_is_refused_saying_to_write_a_number():
    with pytest.raises(ParamsError, match="is text, not a number; write it without quotes"):
        params_from_dict({"lr": "3e-4"})


@pytest.mark.parametrize("key", ["data.bbox_table", "data.metadata_table", "split.test_list", "weights"])
def test_an_empty_file_param_says_to_write_the_stand_in(key: str):
    section, _, name = key.rpartition(".")
    raw = {section: {name: ""}} if section else {name: ""}
    with pytest.raises(ParamsError, match=rf"{key} is empty.*inputs/none"):
        params_from_dict(raw)
