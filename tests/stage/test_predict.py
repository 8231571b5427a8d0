import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import densenet121

from chexnet.model.network import CheXNet
from tests.helpers import LABELS, dx_dicom, run_cli, save_test_model

pydicom = pytest.importorskip("pydicom")


_dicom = dx_dicom  # tests/dicom_files.py


def _gradient():
    return np.tile(np.linspace(0, 4000, 128), (128, 1))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("predict", *args)  # in this process: the fast loop (tests/conftest.py)


def test_predict_cli_json_thresholds_seed_checkpoint_and_bad_files(tmp_path: Path):
    seed_model = densenet121(weights=None)  # the seed's own format: classifier = Sequential(Linear, Sigmoid)
    seed_model.classifier = nn.Sequential(nn.Linear(1024, 14), nn.Sigmoid())
    torch.save(seed_model.state_dict(), tmp_path / "chexnet_model.pth")
    thresholds = dict.fromkeys(LABELS, 0.99) | {"Mass": 0.0}  # Mass always positive, the rest never
    (tmp_path / "thresholds.json").write_text(json.dumps({"method": "youden", "thresholds": thresholds}))
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((100, 100), 90, np.uint8)).save(folder / "a.png")
    _dicom(folder / "sub" / "b.dcm", _gradient(), photometric="MONOCHROME1")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    result = _cli(
        str(folder),
        "--model",
        str(tmp_path / "chexnet_model.pth"),
        "--thresholds",
        str(tmp_path / "thresholds.json"),
        "--json",
        "--heatmaps",
        str(tmp_path / "maps"),
    )
    assert result.returncode == 1, (
        result.stderr
    )  # one unreadable file: the others still run, the status says so
    document = json.loads(result.stdout)
    assert document["thresholds"]["values"]["Mass"] == 0.0
    by_name = {Path(r["file"]).name: r for r in document["results"]}
    assert set(by_name) == {"a.png", "b.dcm", "broken.png"}
    broken = by_name["broken.png"]
    assert not broken["ok"] and broken["status"] == 422 and broken["error"] and "probabilities" not in broken
    for name in ("a.png", "b.dcm"):
        entry = by_name[name]
        assert entry["ok"] and "error" not in entry and entry["positives"] == ["Mass"]
        assert set(entry["probabilities"]) == set(LABELS) and all(
            0 <= v <= 1 for v in entry["probabilities"].values()
        )
        assert {f: Path(p).name for f, p in entry["heatmaps"].items()} == {
            "Mass": f"{Path(name).stem}_Mass.png"
        }
    assert (tmp_path / "maps" / "a_Mass.png").exists()


def test_predict_without_thresholds_warns_and_uses_half(tmp_path: Path):
    torch.manual_seed(0)
    torch.save(CheXNet().state_dict(), tmp_path / "m.pth")
    Image.fromarray(np.full((64, 64), 30, np.uint8)).save(tmp_path / "x.png")
    # no thresholds.json beside the model: a warning and 0.5 (not the current folder's models/thresholds.json)
    result = _cli(str(tmp_path / "x.png"), "--model", str(tmp_path / "m.pth"), "--csv")
    assert result.returncode == 0 and "no thresholds file beside the model" in result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split(",")[:3] == ["file", "error", "findings"] and len(row.split(",")) == 17
    # a thresholds file the user names must exist: a typo is refused, never a silent 0.5
    typo = _cli(str(tmp_path / "x.png"), "--model", str(tmp_path / "m.pth"), "--thresholds", "absent.json")
    assert typo.returncode == 1 and "--thresholds absent.json does not exist" in typo.stderr
    assert "Traceback" not in typo.stderr


def _firing_seed_checkpoint(path: Path, unit: int) -> None:
    """The seed's format, with a head that fires on one output unit only, whatever the image."""
    seed_model = densenet121(weights=None)
    seed_model.classifier = nn.Sequential(nn.Linear(1024, 14), nn.Sigmoid())
    with torch.no_grad():
        seed_model.classifier[0].weight.zero_()
        seed_model.classifier[0].bias.fill_(-10.0)
        seed_model.classifier[0].bias[unit] = 10.0
    torch.save(seed_model.state_dict(), path)


def test_a_seed_checkpoint_reports_its_units_under_their_sorted_names(tmp_path: Path):
    # The seed's MultiLabelBinarizer sorts NIH's findings: unit 2 is Consolidation (CheXNet order: Effusion)
    _firing_seed_checkpoint(tmp_path / "seed.pth", unit=2)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "x.png")
    common = ["--model", str(tmp_path / "seed.pth"), "--json"]
    result = _cli(str(tmp_path / "x.png"), *common)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["results"][0]
    assert entry["positives"] == ["Consolidation"]
    assert "seed's checkpoint" in result.stderr and "sorted" in result.stderr
    names = (
        "Atelectasia,Cardiomegalia,Consolidação,Edema,Derrame,Enfisema,Fibrose,Hérnia,Infiltração,Massa,"
        "Nódulo,Espessamento,Pneumonia,Pneumotórax"
    )
    given = _cli(str(tmp_path / "x.png"), *common, "--labels", names)
    assert json.loads(given.stdout)["results"][0]["positives"] == ["Consolidação"]
    wrong = _cli(str(tmp_path / "x.png"), *common, "--labels", "A,B,C")
    assert wrong.returncode == 1 and "14 outputs but its label list has 3" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_a_model_and_thresholds_with_other_findings_are_refused(tmp_path: Path):
    save_test_model(tmp_path / "m.pth", labels=("Derrame", "Nódulo"), image_size=48)
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "t.json").write_text(
        json.dumps({"labels": ["Mass", "Nodule"], "thresholds": {"Mass": 0.5, "Nodule": 0.5}})
    )
    result = _cli(
        str(tmp_path / "x.png"), "--model", str(tmp_path / "m.pth"), "--thresholds", str(tmp_path / "t.json")
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "['Mass', 'Nodule']" in result.stderr and "['Derrame', 'Nódulo']" in result.stderr  # both lists
    partial = {"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 0.5}}
    (tmp_path / "t.json").write_text(json.dumps(partial))
    result = _cli(
        str(tmp_path / "x.png"), "--model", str(tmp_path / "m.pth"), "--thresholds", str(tmp_path / "t.json")
    )
    assert result.returncode == 1 and "Nódulo" in result.stderr and "Traceback" not in result.stderr


def test_the_model_carries_its_image_size_and_twin_names_keep_their_heat_maps(tmp_path: Path):
    save_test_model(tmp_path / "m.pth", labels=("Derrame", "Nódulo"), image_size=48)
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "in" / folder / "x.png")
    thresholds = {"labels": ["Derrame", "Nódulo"], "thresholds": {"Derrame": 0.0, "Nódulo": 1.0}}
    (tmp_path / "t.json").write_text(json.dumps(thresholds))
    common = ["--model", str(tmp_path / "m.pth"), "--thresholds", str(tmp_path / "t.json")]
    result = _cli(str(tmp_path / "in"), *common, "--json", "--heatmaps", str(tmp_path / "maps"))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"]["image_size"] == 48 and document["model"]["findings"] == ["Derrame", "Nódulo"]
    maps = [Path(m).name for entry in document["results"] for m in entry["heatmaps"].values()]
    assert len(set(maps)) == 2 and all(m.endswith("_Derrame.png") for m in maps)
    assert len(list((tmp_path / "maps").glob("*.png"))) == 2  # neither overlay overwrote the other
    refused = _cli(str(tmp_path / "in"), *common, "--image-size", "224")
    assert refused.returncode == 1 and "trained at 48 px" in refused.stderr
