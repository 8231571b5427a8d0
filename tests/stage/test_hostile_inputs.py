"""What a hostile new user can throw at the stages, and what they get back.

For every case the promise is the same (docs/pipeline.md, "What we promise"): a clean one-line error
naming what to fix, or a counted, explained skip; never a traceback, and never an output that DVC would
record as good when it is not. Tables and images are generated here; params that name nothing are
derived from the params schema itself, so a param added tomorrow is covered without touching this file.

The stage scripts run as DVC runs them, in this process (``tests.helpers.run_stage``: the same script,
parser, params and one-line errors, without a new interpreter per case). What only a real process shows
(a kill at a random moment, SIGTERM, the same line from a real interpreter) is in
tests/system/test_robustness.py and tests/system/test_lifecycle.py.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.helpers import make_workdir, param_leaves, run_cli, run_stage, save_test_model, set_dotted
from tests.repository.test_dvc_deps import stages_reading


def one_clean_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1, no traceback, and exactly one ERROR line that holds every needle."""
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        names.append(f"{i:08d}_000.png")
        Image.fromarray(np.full((40, 40), (7 * i) % 256, np.uint8)).save(folder / names[-1])
    return names


def prepare_work(folder: Path, n: int = 20, **data) -> tuple[Path, pd.DataFrame]:
    """A folder with n images, a seed-format table (not yet written) and params.yaml for prepare."""
    names = images(folder / "images", n)
    table = pd.DataFrame(
        {
            "imagem": names,
            "patologia": ["Mass" if i % 2 else "No Finding" for i in range(n)],
            "paciente_id": [str(i) for i in range(n)],
        }
    )
    settings = {"table": "table.parquet", "images": "images", "min_positives": 1, "workers": 1} | data
    params = {"image_size": 32, "data": settings}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder, table


@functools.cache
def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, format="PNG")  # seconds to compress: made once
    return buffer.getvalue()


def bomb(path: Path) -> None:
    """A valid PNG whose header declares 30000 × 30000 pixels (a decompression bomb)."""
    path.write_bytes(_bomb_png())


def evaluable(root: Path, resamples: int = 50) -> Path:
    """A tiny work dir as train leaves it (tests.helpers.make_workdir plus a model and the reports),
    with split and evaluate run."""
    work = make_workdir(root, epochs=1)
    (work / "params.yaml").write_text(
        f"{{weights: none, device: cpu, evaluate: {{bootstrap_resamples: {resamples}}}, "
        "data: {bbox_table: inputs/none}}\n"
    )
    save_test_model(work / "models" / "chexnet_model.pth")
    (work / "reports").mkdir()
    (work / "metrics").mkdir()
    (work / "reports" / "prepare.json").write_text(json.dumps({"rows_in_table": 48, "rows_selected": 48,
        "images_written": 48, "duplicate_rows_merged": 0, "rejected": {}, "rejected_total": 0}))  # fmt: skip
    (work / "metrics" / "train.json").write_text(json.dumps({"pretrained": False, "epochs_trained": 1}))
    for stage in ("split", "evaluate"):
        result = run_stage(stage, cwd=work)
        assert result.returncode == 0, result.stderr[-2000:]
    return work


# --- bad tables ---------------------------------------------------------------------------------------
def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


TABLE_CASES = {
    "parquet-truncated": ("table.parquet", lambda t, p: (t.to_parquet(p), _truncated(p)), "cannot be read"),
    "csv-gz-truncated": (
        "table.csv.gz",
        lambda t, p: (t.to_csv(p, index=False, compression="gzip"), _truncated(p)),
        "cannot be read",
    ),
    "csv-latin-1": (
        "table.csv",
        lambda t, p: p.write_bytes(t.assign(patologia="Nódulo").to_csv(index=False).encode("latin-1")),
        "not UTF-8",
    ),
    "csv-empty-file": ("table.csv", lambda t, p: p.write_bytes(b""), "is empty"),
    "parquet-header-only": ("table.parquet", lambda t, p: t.iloc[:0].to_parquet(p), "has no rows"),
    "csv-only-no-finding": (
        "table.csv",
        lambda t, p: t.assign(patologia="No Finding").to_csv(p, index=False),
        "no finding has",
    ),
    "csv-wrong-column": (
        "table.csv",
        lambda t, p: t.rename(columns={"patologia": "pathology"}).to_csv(p, index=False),
        "no column 'patologia'",
    ),
    "csv-not-a-table": ("table.csv", lambda t, p: p.write_bytes(os.urandom(300)), "table.csv"),
    "missing-table": ("absent.parquet", lambda t, p: None, "does not exist"),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_a_bad_table_stops_prepare_with_one_line(tmp_path: Path, case: str):
    name, make, needle = TABLE_CASES[case]
    work, table = prepare_work(tmp_path, table=name)
    make(table, work / name)
    one_clean_line(run_stage("prepare", cwd=work), needle)
    assert not (work / "metrics" / "prepare.json").exists()  # nothing for DVC to record as good


@pytest.mark.parametrize(
    ("column", "reason"), [("imagem", "empty_image_name"), ("patologia", "empty_label"),
                           ("paciente_id", "empty_patient")]
)  # fmt: skip
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_missing_values_in_every_column_are_counted_skips(tmp_path: Path, column: str, reason: str, fmt: str):
    work, table = prepare_work(tmp_path, table=f"table.{fmt}", max_rejected_fraction=0.5)
    table[column] = table[column].astype(object)
    table.loc[[3, 4], column] = None
    table.to_parquet(work / "table.parquet") if fmt == "parquet" else table.to_csv(
        work / "table.csv", index=False
    )
    result = run_stage("prepare", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((work / "reports" / "prepare.json").read_text())
    assert report["rejected"] == {reason: 2} and report["images_written"] == 18
    rejects = pd.read_csv(work / "data" / "prepared" / "rejects.csv")
    assert sorted(rejects["table_row"]) == [3, 4] and set(rejects["reason"]) == {reason}


# --- bad images -----------------------------------------------------------------------------------------
IMAGE_CASES = {
    "empty": ("empty_file", lambda p: p.write_bytes(b"")),
    "truncated": ("truncated", lambda p: p.write_bytes(p.read_bytes()[:-200])),
    "corrupt-header": ("unreadable", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)),
    "text": ("unreadable", lambda p: p.write_text("not an image")),
    "bomb": ("too_large", bomb),
    "directory": ("missing_file", lambda p: (p.unlink(), p.mkdir())),  # a folder is not an image file
    "symlink-out": ("unsafe_path", lambda p: (p.unlink(), p.symlink_to(p.parents[1] / "outside.png"))),
    "missing": ("missing_file", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_every_way_an_image_can_be_wrong_is_a_counted_reject(tmp_path: Path, case: str):
    reason, make = IMAGE_CASES[case]
    work, table = prepare_work(tmp_path, max_rejected_fraction=0.5)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)).save(
        work / "images" / table["imagem"][5]
    )  # large enough to truncate mid-data
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(work / "outside.png")
    make(work / "images" / table["imagem"][5])
    table.to_parquet(work / "table.parquet")
    result = run_stage("prepare", cwd=work)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    report = json.loads((work / "reports" / "prepare.json").read_text())
    assert report["rejected"] == {reason: 1} and report["images_written"] == 19


def test_one_file_name_in_two_folders_works_with_relative_paths(tmp_path: Path):
    work, table = prepare_work(tmp_path)
    (work / "images" / "a").mkdir()
    (work / "images" / "b").mkdir()
    for folder in ("a", "b"):
        Image.fromarray(np.full((40, 40), 9, np.uint8)).save(work / "images" / folder / "x.png")
    extra = pd.DataFrame({"imagem": ["a/x.png", "b/x.png"], "patologia": "Mass", "paciente_id": ["90", "91"]})
    pd.concat([table, extra]).to_parquet(work / "table.parquet")
    result = run_stage("prepare", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((work / "reports" / "prepare.json").read_text())["images_written"] == 22


def test_outputs_get_the_users_permissions_not_0600(tmp_path: Path):
    work, table = prepare_work(tmp_path)
    table.to_parquet(work / "table.parquet")
    previous = os.umask(0o022)
    try:
        assert run_stage("prepare", cwd=work).returncode == 0
    finally:
        os.umask(previous)
    assert (work / "metrics" / "prepare.json").stat().st_mode & 0o777 == 0o644


def test_gzip_table_round_trip_is_supported(tmp_path: Path):
    work, table = prepare_work(tmp_path, table="table.csv.gz")
    with gzip.open(work / "table.csv.gz", "wt", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)
    assert run_stage("prepare", cwd=work).returncode == 0


def test_a_read_only_output_file_system_is_one_line(tmp_path: Path, monkeypatch):
    """Root ignores permission bits, so the failure a read-only folder gives is simulated at the
    file-system call: the stage must turn it into one line naming the path."""
    from chexnet.core import io
    from chexnet.pipeline import stage_runner

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "metrics"))

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(sys, "argv", ["prepare.py"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        stage_runner.run_stage(
            "test", lambda params: io.write_text(tmp_path / "metrics" / "x.json", "{}"), sections=()
        )
    assert stopped.value.code == 1


def test_explain_goes_on_after_a_decompression_bomb(tmp_path: Path):
    save_test_model(tmp_path / "m.pth", image_size=32)
    bomb(tmp_path / "bomb.png")
    Image.fromarray(np.full((64, 64), 80, np.uint8)).save(tmp_path / "good.png")
    files = [str(tmp_path / "bomb.png"), str(tmp_path / "good.png")]
    options = ["--model", str(tmp_path / "m.pth"), "--finding", "Mass", "--out", str(tmp_path / "out")]
    result = run_cli("explain", *files, *options, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bomb.png: cannot be explained" in result.stderr and (tmp_path / "out" / "good_Mass.png").exists()


# --- params the check stage and the stage that reads them both refuse ---------------------------------
@pytest.mark.parametrize(
    ("bad", "stages"),
    [
        ("{train: {early_stopping_patience: -1}}", ["check", "train"]),
        ("{epochs: -1}", ["check", "train"]),
        ("{train: {amp: fp8}}", ["check", "train"]),
        ("{train: {procesess: 2}}", ["check", "train"]),  # a typo: never read as processes 1
        ("{evaluate: {calibration_bins: 0}}", ["check", "evaluate"]),
        ("{explain: {top_k: 0}}", ["check", "explain"]),
        ("{lr: .nan}", ["check", "prepare"]),
        ("labels: [a, a]", ["check", "prepare"]),
        ("{data: {preset: padchestt}}", ["check", "prepare"]),
    ],
)
def test_bad_params_stop_the_check_stage_and_the_stage_that_reads_them_before_they_write(
    tmp_path: Path, bad: str, stages: list[str]
):
    """The check stage (first under dvc repro) reads every section; a stage reads the top level and
    its own sections: both refuse a bad value in one line, naming its key, before writing anything."""
    (tmp_path / "params.yaml").write_text(bad)
    for stage in stages:
        one_clean_line(run_stage(stage, cwd=tmp_path), "params:")
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


# --- params that pass the type check but name nothing -------------------------------------------------
NOTHING = "nothing_named_this"
PLAUSIBLE = {  # values for text params beyond the schema's file/free marks: what people mistype
    "data.no_finding": ["Nothing Here"],
    "explain.target_layer": ["features[99]", "classifier", "nope"],
    "device": ["cuda", "cuda:7", "mps"],
    "train.checkpoint_dir": [f"{NOTHING}/deeper"],
    "labels": [["Nothing"]],
    "data.ignore_findings": [["Nothing"]],
    "data.views": [["AP"]],
    "split.method": ["official"],
}


MAY_NAME_NOTHING = {"data.metadata_table", "split.test_list", "split.train_val_list", "train.checkpoint_dir"}


def names_nothing() -> list[tuple[str, object]]:
    """Every file and free-text param with a value that names nothing, derived from the schema, plus
    the layer, device, list and token params above."""
    cases = []
    for key, _hint, meta in param_leaves():
        if meta.get("file"):
            cases.append((key, f"{NOTHING}/file.csv"))
        elif meta.get("free"):
            cases.append((key, NOTHING))
    cases += [(key, value) for key, values in PLAUSIBLE.items() for value in values]
    return cases


@pytest.fixture(scope="module")
def every_stage_work(tmp_path_factory) -> Path:
    """A work dir where every stage can run: a table and images for prepare, and what each later stage
    reads (tests.helpers.make_workdir, a model, evaluate's outputs)."""
    work = evaluable(tmp_path_factory.mktemp("every-stage"))
    names = images(work / "images", 20)
    findings = ["Mass|Effusion" if i % 2 else "No Finding" for i in range(20)]
    table = pd.DataFrame({"imagem": names, "patologia": findings, "paciente_id": [str(i) for i in range(20)]})
    table.to_parquet(work / "table.parquet")
    (work / "inputs").mkdir()
    (work / "inputs" / "none").write_text("")
    return work


def _with(key: str, value) -> dict:
    params = {"weights": "inputs/none", "device": "cpu", "epochs": 1, "batch_size": 8,
              "evaluate": {"bootstrap_resamples": 20}, "explain": {"top_k": 1},
              "data": {"table": "table.parquet", "images": "images", "min_positives": 1, "workers": 1,
                       "bbox_table": "inputs/none"}}  # fmt: skip
    set_dotted(params, key, value)
    if key == "split.method":
        params["split"]["test_list"] = f"{NOTHING}.txt"
    return params


@pytest.mark.parametrize(("key", "value"), names_nothing(), ids=lambda v: str(v))
def test_a_param_that_names_nothing_gives_one_line_in_every_stage_that_reads_it(
    every_stage_work: Path, tmp_path: Path, key: str, value
):
    readers = stages_reading(key)
    assert readers, f"{key}: no stage lists it in dvc.yaml"
    # external@<name> runs per external set, which this work dir has none of: test_pipeline.py runs it
    readers = [stage for stage in readers if stage != "external"]
    refused = []
    for stage in readers:
        work = tmp_path / stage
        shutil.copytree(every_stage_work, work)
        (work / "params.yaml").write_text(yaml.safe_dump(_with(key, value)))
        result = run_stage(stage, cwd=work)
        assert "Traceback" not in result.stderr, f"{stage} with {key}={value!r}:\n{result.stderr[-3000:]}"
        if result.returncode != 0:
            one_clean_line(result)
            refused.append(stage)
    # a name that names nothing is refused by a stage that reads it, unless the setting does not apply
    # here (MIMIC's metadata table, official split lists under a random split) or makes what it names
    if key not in MAY_NAME_NOTHING:
        assert refused, f"{key}={value!r} was taken silently by {readers}"
