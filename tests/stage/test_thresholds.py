"""One thresholds rule for every path: predict, the service, export and the external sets read
thresholds.json the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.model.file import load_model
from chexnet.model.thresholds import ThresholdsError, operating_points, stamp
from tests.helpers import LABELS, TEST_MODEL_SIZE, png_file, run_cli, save_test_model, thresholds_file


def test_thresholds_of_this_model_are_used_with_their_source(model_path: Path):
    thresholds_file(model_path, dict.fromkeys(LABELS, 0.25), model_sha256=io.sha256_of(model_path))
    chosen = operating_points(model_path, load_model(model_path)[1])
    assert chosen.kind == "validation" and set(chosen.values.values()) == {0.25}
    assert str(model_path.parent / "thresholds.json") in chosen.source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.pop("Mass"), "missing \\['Mass'\\]"),
        (lambda v: v.update(Mass=7.0), "not probabilities in \\[0, 1\\]"),
        (lambda v: v.update(Mass=float("nan")), "not probabilities"),
        (lambda v: v.update(Mass=True), "not probabilities"),
    ],
)
def test_a_thresholds_file_predict_refuses_stops_the_service_too(model_path: Path, change, message):
    from chexnet.deploy.serve import Service

    values = dict.fromkeys(LABELS, 0.3)
    change(values)
    thresholds_file(model_path, values)
    with pytest.raises(ChexnetError, match=message):
        operating_points(model_path, load_model(model_path)[1])
    with pytest.raises(ChexnetError, match=message):
        Service(model_path, engine="torch", device="cpu")
    result = run_cli("predict", str(png_file(model_path.parent / "x.png")), "--model", str(model_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_thresholds_chosen_for_another_model_are_refused_everywhere(model_path: Path, tmp_path: Path):
    other = tmp_path / "other.pth"
    save_test_model(other, image_size=TEST_MODEL_SIZE, seed=1)  # same findings, other weights: a retrain
    thresholds_file(model_path, dict.fromkeys(LABELS, 0.3), model_sha256=io.sha256_of(other))
    with pytest.raises(ThresholdsError, match="chosen for another model"):
        operating_points(model_path, load_model(model_path)[1])
    result = run_cli("export", str(model_path), "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and "chosen for another model" in result.stderr


def test_evaluates_stamp_names_the_model_file(model_path: Path):
    document = stamp({"thresholds": {}}, model_path)
    assert document["model_sha256"] == io.sha256_of(model_path)


def test_no_thresholds_file_means_the_record_or_05_said_so(model_path: Path, tmp_path: Path):
    chosen = operating_points(model_path, load_model(model_path)[1])
    assert chosen.kind == "default" and set(chosen.values.values()) == {0.5} and "0.5" in chosen.source
    with pytest.raises(ThresholdsError, match="does not exist"):
        operating_points(model_path, load_model(model_path)[1], tmp_path / "nowhere.json")
