"""The model card shows only intervals that mean something: counts beside every rate, ``exact`` for a
Clopper–Pearson interval, ``no CI`` where there is none, and the largest gap with its reference and the
kind of interval it has."""

from __future__ import annotations

import numpy as np

from chexnet.evaluation import subgroups
from chexnet.pipeline.card_tables import interval, subgroup_lines


def test_a_rate_shows_its_counts_and_which_interval_it_has():
    assert interval({"value": 0.0, "ci_low": 0.0, "ci_high": 0.052, "events": 0, "of": 69,
                     "interval": "clopper-pearson"}) == "0.000 (0.000–0.052, exact; 0/69)"  # fmt: skip
    assert interval({"value": 0.25, "ci_low": 0.2, "ci_high": 0.3, "events": 10, "of": 40,
                     "interval": "patient bootstrap"}) == "0.250 (0.200–0.300; 10/40)"  # fmt: skip
    assert (
        interval({"value": 0.783, "ci_low": None, "ci_high": None, "too_few": "1 patient"}) == "0.783 (no CI)"
    )
    assert interval({"value": None, "undefined": "no positives"}) == "undefined (no positives)"


def test_the_subgroup_section_names_the_reference_the_common_findings_and_no_zero_width_interval():
    rng = np.random.default_rng(0)
    n = 400
    patients = np.repeat(np.arange(n // 2), 2).astype(str)
    sex = np.repeat(rng.choice(["F", "M"], n // 2), 2)
    truth = (rng.random((n, 2)) < 0.4).astype(float)
    scores = np.clip(truth * 0.4 + rng.random((n, 2)) * 0.6, 0, 1)
    section = subgroups.subgroup_results(
        truth, scores, patients, {"sex": sex}, ["A", "B"], {"A": 0.5, "B": 0.5}, resamples=100
    )
    text = "\n".join(subgroup_lines(section))
    assert "every group can score: A, B" in text
    assert "(reference fixed in advance)" in text and "simultaneous over 1 gap(s)" in text
    assert "0.000 (0.000–0.000" not in text
