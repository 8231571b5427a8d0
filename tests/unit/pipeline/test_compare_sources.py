"""``chexnet compare``'s inputs: two predictions files paired image by image, and refused when they are
not the same test split or not judged against the same labels; the command in process on two files."""

from __future__ import annotations

import numpy as np
import pytest

from chexnet.core.errors import ChexnetError
from chexnet.pipeline.compare import Predictions, pair
from tests.helpers import predictions_frame


def test_the_same_images_in_another_order_are_paired_by_name():
    a = predictions_frame(1)
    b = predictions_frame(2, order=np.random.default_rng(5).permutation(60))
    paired = pair(Predictions("a", a, None), Predictions("b", b, None))
    expected = b.set_index("image").loc[a["image"], "p_Nódulo"].to_numpy()
    assert np.array_equal(paired.scores_b[:, 1], expected) and paired.findings == ["Derrame", "Nódulo"]


def test_two_different_test_splits_are_refused_with_the_reason():
    a, b = predictions_frame(1), predictions_frame(2)
    b.loc[0, "image"] = "another.png"
    with pytest.raises(ChexnetError, match=r"different test images: 1 only in A .*1 only in B"):
        pair(Predictions("a", a, None), Predictions("b", b, None))


def test_other_labels_on_the_same_images_are_refused():
    a, b = predictions_frame(1), predictions_frame(2)
    b.loc[3, "Derrame"] = 1 - b.loc[3, "Derrame"]
    with pytest.raises(ChexnetError, match="the labels of Derrame differ"):
        pair(Predictions("a", a, None), Predictions("b", b, None))
