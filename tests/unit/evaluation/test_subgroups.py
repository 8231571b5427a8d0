"""Results by subgroup: the underdiagnosis rate and AUROC per group against hand computations, the
interval rules (too small, unknown), and the gap to the best group."""

import numpy as np
import pandas as pd
import pytest

from chexnet.evaluation import report, subgroups


def test_age_bands_put_each_age_in_its_band_and_missing_in_unknown():
    ages = pd.Series([0, 19.9, 20, 59, 60, 80, 95, np.nan])
    assert list(subgroups.age_bands(ages)) == [
        "0-20", "0-20", "20-40", "40-60", "60-80", "80+", "80+", "unknown"
    ]  # fmt: skip


def _case():
    """Two findings, thresholds 0.5; group F misses more sick images than group M."""
    truth = np.array([
        [1, 0], [0, 1], [1, 1], [0, 0],   # F: 3 sick images, 2 of them called normal
        [1, 0], [0, 1], [1, 0], [0, 0],   # M: 3 sick images, 0 called normal
    ], dtype=float)  # fmt: skip
    scores = np.array([
        [0.4, 0.1], [0.2, 0.3], [0.6, 0.9], [0.1, 0.2],
        [0.9, 0.1], [0.1, 0.8], [0.7, 0.3], [0.6, 0.2],
    ])  # fmt: skip
    sex = np.array(["F"] * 4 + ["M"] * 4)
    return truth, scores, sex


def test_underdiagnosis_sensitivity_and_auroc_per_group_equal_a_hand_computation():
    truth, scores, sex = _case()
    patients = np.arange(8).astype(str)
    result = subgroups.subgroup_results(
        truth, scores, patients, {"sex": sex}, ["A", "B"], {"A": 0.5, "B": 0.5},
        resamples=200, seed=0, min_patients=1, min_positive_patients=1,
    )  # fmt: skip
    f, m = result["sex"]["groups"]["F"], result["sex"]["groups"]["M"]
    # F: sick images 0, 1, 2; image 0 (0.4, 0.1) and 1 (0.2, 0.3) clear no threshold: 2 of 3
    assert f["underdiagnosis"]["value"] == pytest.approx(2 / 3)
    assert m["underdiagnosis"]["value"] == pytest.approx(0.0)
    # F pooled sensitivity: positives (0,A) (1,B) (2,A) (2,B): hits at (2,A), (2,B): 2 of 4
    assert f["sensitivity"]["value"] == pytest.approx(0.5)
    # M specificity: negatives (4,B) (5,A) (6,B) (7,A) (7,B): (7,A) 0.6 is a false positive: 4 of 5
    assert m["specificity"]["value"] == pytest.approx(0.8)
    # F AUROC of A: positives 0.4, 0.6 against negatives 0.2, 0.1: 1.0; of B: 0.3, 0.9 vs 0.1, 0.2: 1.0
    assert f["auroc_per_finding"]["A"]["value"] == pytest.approx(1.0)
    assert f["images"] == 4 and f["patients"] == 4 and f["images_with_finding"] == 3
    gap = result["sex"]["largest_gap"]["underdiagnosis"]
    assert (gap["best"], gap["worst"]) == ("M", "F")
    assert gap["value"] == pytest.approx(2 / 3)
    assert gap["ci_low"] is not None and gap["ci_low"] <= gap["value"] <= gap["ci_high"]


def test_the_interval_follows_patients_not_images():
    """Replicates draw patients: a patient's images move together, so a group whose two images belong
    to one patient has an interval from that patient's draws only."""
    truth, scores, sex = _case()
    one_patient_each = np.array(["f1", "f1", "f2", "f2", "m1", "m1", "m2", "m2"])
    result = subgroups.subgroup_results(
        truth, scores, one_patient_each, {"sex": sex}, ["A", "B"], {"A": 0.5, "B": 0.5},
        resamples=300, seed=1, min_patients=1, min_positive_patients=1,
    )  # fmt: skip
    f = result["sex"]["groups"]["F"]["underdiagnosis"]
    # f1 holds images 0 and 1 (both sick, both missed), f2 holds 2 (sick, found) and 3 (healthy):
    # a replicate's rate is (2·n_f1) / (2·n_f1 + n_f2), one of 0, 2/3, 1 (or undefined): nothing else
    assert f["value"] == pytest.approx(2 / 3)
    assert {round(f["ci_low"], 6), round(f["ci_high"], 6)} <= {0.0, round(2 / 3, 6), 1.0}


def test_a_group_too_small_gets_points_without_intervals_and_unknown_takes_no_part_in_gaps():
    truth, scores, sex = _case()
    sex = sex.astype(object)
    sex[3] = "unknown"
    result = subgroups.subgroup_results(
        truth, scores, np.arange(8).astype(str), {"sex": sex}, ["A", "B"], {"A": 0.5, "B": 0.5},
        resamples=50, seed=0, min_patients=4, min_positive_patients=1,
    )  # fmt: skip
    groups = result["sex"]["groups"]
    assert "fewer than 4" in groups["F"]["too_small"]  # 3 patients left in F
    assert groups["F"]["underdiagnosis"]["value"] == pytest.approx(2 / 3)
    assert groups["F"]["underdiagnosis"]["ci_low"] is None
    assert "too_small" in groups["unknown"]
    assert result["sex"]["gaps"] == {}  # one sized group left: nothing to compare


def test_the_no_finding_cut_is_chosen_on_validation_and_used_for_underdiagnosis():
    """Abnormality = max_j p_j / t_j. Validation: sick images score 0.9/0.5 = 1.8 and 1.6, healthy
    ones 1.2 and 1.0 (each clears a threshold: the cut 1 would call none of them normal); Youden's cut
    lies between 1.2 and 1.6, so a test image at 1.4 is called "no finding"."""
    thresholds = {"A": 0.5, "B": 0.5}
    val_truth = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=float)
    val_scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.1], [0.5, 0.2]])
    cut, fallback = report.choose_no_finding_cut(val_truth, val_scores, thresholds, ["A", "B"], "youden")
    assert fallback is None and 1.2 < cut <= 1.6
    test_truth = np.array([[1, 0], [1, 0], [0, 0]] * 4, dtype=float)
    test_scores = np.array([[0.7, 0.1], [0.95, 0.1], [0.1, 0.1]] * 4)  # 1.4 (missed), 1.9 (found), healthy
    sex = np.array(["F", "F", "F", "M", "M", "M"] * 2)
    result = subgroups.subgroup_results(
        test_truth, test_scores, np.arange(12).astype(str), {"sex": sex}, ["A", "B"], thresholds,
        no_finding_cut=cut, resamples=20, min_patients=1, min_positive_patients=1,
    )  # fmt: skip
    assert result["sex"]["groups"]["F"]["underdiagnosis"]["value"] == pytest.approx(0.5)
    at_one = subgroups.subgroup_results(
        test_truth, test_scores, np.arange(12).astype(str), {"sex": sex}, ["A", "B"], thresholds,
        no_finding_cut=1.0, resamples=20, min_patients=1, min_positive_patients=1,
    )  # fmt: skip
    assert at_one["sex"]["groups"]["F"]["underdiagnosis"]["value"] == 0.0  # every sick image clears one
    record = report.validation_operating_points(val_truth, val_scores, ["A", "B"], "youden")
    own, _ = report.choose_no_finding_cut(val_truth, val_scores, record["thresholds"], ["A", "B"], "youden")
    assert record["no_finding"]["cut"] == pytest.approx(own) and record["no_finding"]["chosen_on"] == "val"


def test_the_demo_external_set_is_refused_before_any_stage_when_the_data_is_the_users(tmp_path):
    """The repo's params name the demo's second hospital; a user who points data.table at their own table
    is told to remove it (the demo stage draws nothing then), by the check stage and `chexnet check`."""
    import yaml

    from chexnet.pipeline.check import check
    from tests.helpers import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    table = tmp_path / "gold.parquet"
    table.write_bytes(b"")
    params["data"].update(table=str(table), images=str(tmp_path))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    problems = check(tmp_path / "params.yaml", REPO / "dvc.yaml")
    assert any("evaluate.external.demo_padchest is the demo's second hospital" in p for p in problems)
    params["evaluate"]["external"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert not any("evaluate.external" in p for p in check(tmp_path / "params.yaml", REPO / "dvc.yaml"))
