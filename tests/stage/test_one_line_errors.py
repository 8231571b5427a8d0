"""One line for each error a user can make, from every command (a traceback only with -v)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.helpers import LABELS, png_file, run_cli, thresholds_file


def test_serve_refuses_an_impossible_port_before_loading_the_model(tmp_path: Path):
    result = run_cli("serve", "--model", str(tmp_path / "absent.pth"), "--port", "99999")
    assert result.returncode == 1 and "--port 99999" in result.stderr and "absent" not in result.stderr


@pytest.mark.parametrize("command", ["export", "import"])
def test_out_naming_a_folder_or_an_unwritable_place_is_one_line(model_path: Path, tmp_path: Path, command):
    folder = tmp_path / "a folder"
    folder.mkdir()
    args = (
        [str(model_path), "--out"]
        if command == "export"
        else [str(model_path), "--format", "seed", "--labels", ",".join(LABELS), "--out"]
    )
    result = run_cli(command, *args, str(folder))
    assert result.returncode == 1 and "is a folder" in result.stderr and "Traceback" not in result.stderr
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    result = run_cli(command, *args, str(blocked / "m.out"))
    assert (
        result.returncode == 1 and "cannot be written" in result.stderr and "Traceback" not in result.stderr
    )


def test_labels_naming_a_binary_file_is_one_line(model_path: Path, tmp_path: Path):
    binary = tmp_path / "labels.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_cli(
        "import",
        str(model_path),
        "--format",
        "seed",
        "--labels",
        str(binary),
        "--out",
        str(tmp_path / "x.pth"),
    )
    assert result.returncode == 1 and "not a text file of finding names" in result.stderr


def test_counts_on_a_table_without_the_image_column_names_the_column(tmp_path: Path):
    table = tmp_path / "t.parquet"
    pd.DataFrame({"patologia": ["Mass|Nodule", "No Finding"], "paciente_id": [1, 2]}).to_parquet(table)
    result = run_cli("counts", str(table))
    assert result.returncode == 1 and "has no column 'imagem'" in result.stderr


def test_an_external_set_without_a_table_is_named_by_check(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"external": {"x": {"images": "somewhere"}}}}))
    result = run_cli("check", "--params", str(params))
    assert result.returncode == 1 and "'evaluate.external.x.table' missing" in result.stderr


@pytest.mark.parametrize("name", ["vgg11", "mobilenet_v2"])
def test_a_state_dict_of_another_backbone_is_named_not_read_as_4096_findings(tmp_path: Path, name: str):
    import torchvision

    path = tmp_path / f"{name}.pth"
    # torchvision's own keys and shapes (built on the meta device), each tensor one zero broadcast to its
    # shape: torch.save keeps the shape in a file of kilobytes, where VGG11's weights are 531 MB
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in getattr(torchvision.models, name)().state_dict().items()}
    torch.save({key: torch.zeros(()).expand(shape) for key, shape in shapes.items()}, path)
    result = run_cli("predict", str(png_file(tmp_path / "x.png")), "--model", str(path))
    assert result.returncode == 1 and "is not a densenet121 or resnet50 state_dict" in result.stderr
    assert "4096" not in result.stderr and "missing keys" not in result.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_comes_with_v(model_path: Path, monkeypatch):
    png_file(model_path.parent / "x.png")

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : something\nwith a second line")

    monkeypatch.setattr("chexnet.deploy.predict.predict_files", broken)
    result = run_cli("predict", str(model_path.parent), "--model", str(model_path))
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(errors) == 2
    assert "RuntimeError: [ONNXRuntimeError]" in errors[0] and "-v" in errors[1]


def test_a_file_name_that_looks_like_tex_is_a_title_not_math(model_path: Path, tmp_path: Path):
    image = png_file(tmp_path / "scan$_{2.png")
    result = run_cli(
        "predict",
        str(image),
        "--model",
        str(model_path),
        "--engine",
        "torch",
        "--heatmaps",
        str(tmp_path / "maps"),
        "--thresholds",
        str(thresholds_file(model_path, dict.fromkeys(LABELS, 0.0))),
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "maps").glob("*.png"))) == len(LABELS)
