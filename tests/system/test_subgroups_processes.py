"""The committed run's subgroup figures, read from git (the unit tests:
tests/unit/evaluation/test_subgroups.py)."""

from __future__ import annotations


def test_the_committed_default_run_finds_the_planted_gap_and_the_planted_shift():
    """The demo leaves some of women's findings unpainted (demo.female_occult) and paints its second
    hospital's fainter for everyone (demo.external_contrast): the committed run (reports/ as the
    repository ships them, :func:`tests.conftest.committed`) must find women worse served, and the
    external set harder, than the test split. A local ``dvc repro`` on another CPU (fp32 where bf16 is
    not native) writes its own figures, which this test does not judge (#33: on one fp32 run the external
    interval's upper end was 0.8451 against the test split's 0.8415)."""
    import json

    import yaml

    from tests.helpers import committed

    params = yaml.safe_load(committed("params.yaml"))["demo"]
    assert params["female_occult"] > 0 and params["external_contrast"] < params["contrast"]
    report = json.loads(committed("reports/evaluate.json"))
    sex = report["subgroups"]["sex"]
    reference = sex["reference"]  # the larger group (evaluate.subgroup_reference names none)
    other = {"F": "M", "M": "F"}[reference]
    gap = sex["gaps"]["auroc"]["to_reference"][other]  # other − reference, simultaneous interval
    assert gap["ci_high"] < 0 if other == "F" else gap["ci_low"] > 0  # women worse: the interval excludes 0
    women, men = sex["groups"]["F"], sex["groups"]["M"]
    assert women["sensitivity"]["value"] < men["sensitivity"]["value"]
    external = json.loads(committed("reports/external/demo_padchest.json"))
    assert external["auroc"]["macro"]["ci_high"] < report["auroc"]["macro"]["value"]
