"""The shared parity metrics (vlexport.metrics), checked against values computed by hand."""

import numpy as np
import pytest

from vlexport import metrics


def test_cosine_and_parity_by_hand():
    assert metrics.cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert metrics.cosine([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.cosine([3, 4], [4, 3]) == pytest.approx(24 / 25)
    ref = np.array([[1.0, 2.0, -4.0], [0.5, 0.0, 0.1]])
    out = ref + np.array([[0.0, 0.1, 0.0], [0.0, 0.6, 0.0]])
    p = metrics.parity(ref, out, classes=True)
    assert p["max_abs_err"] == pytest.approx(0.6)
    assert p["max_rel_err"] == pytest.approx(0.6 / 4.0)
    assert p["top1"] == pytest.approx(0.5)  # row 2's argmax moves from 0 to 1
    assert p["n_rows"] == 2 and p["finite"]


def test_topk_by_hand():
    ref = np.array([[0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]], dtype=float)
    out = np.array([[6, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]], dtype=float)
    # row 1: ref argmax 6, out's ranking: 0,6,5,4,3 -> 6 in top-5, not top-1; row 2: ref argmax 0 is out's last
    assert metrics.topk_agreement(ref, out, 1) == 0.0
    assert metrics.topk_agreement(ref, out, 5) == 0.5
    # top-5 sets: row 1 ref {6,5,4,3,2} vs out {0,6,5,4,3} -> 4/5; row 2 ref {0,1,2,3,4} vs out {6,5,4,3,2} -> 3/5
    assert metrics.topk_overlap(ref, out, 5) == pytest.approx(0.7)


def test_merge_parity_weights_by_rows():
    a = {"max_abs_err": 1.0, "max_rel_err": 0.1, "cosine": 1.0, "cosine_min": 1.0, "finite": True, "n_rows": 1,
         "top1": 1.0, "top5": 1.0, "top5_overlap": 1.0, "mean_abs_err": 0.0}
    b = {**a, "max_abs_err": 2.0, "top1": 0.0, "n_rows": 3, "cosine_min": 0.5}
    m = metrics.merge_parity([a, b])
    assert m["max_abs_err"] == 2.0 and m["top1"] == pytest.approx(0.25) and m["n_rows"] == 4
    assert m["cosine_min"] == 0.5


def test_worst_row_cosine_and_masked_entries():
    """cosine_min ranks rows (one vector along the last axis); masked entries are left out and must stay
    masked; a row whose reference is ~0 is not ranked (its direction is noise)."""
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = np.array([[1.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    p = metrics.parity(ref, out)
    assert p["cosine_min"] == pytest.approx(1 / np.sqrt(2))
    assert p["cosine"] > p["cosine_min"]  # the flattened cosine hides the bad row
    fmin = np.finfo(np.float32).min
    ref = np.array([[2.0, 1.0, fmin], [1.0, 3.0, fmin]])
    same = metrics.parity(ref, ref.copy(), classes=True, masked_below=-1e30)
    assert same["max_abs_err"] == 0 and same["finite"] and same["top1"] == 1.0
    unmasked = ref.copy()
    unmasked[0, 2] = 5.0
    bad = metrics.parity(ref, unmasked, classes=True, masked_below=-1e30)
    assert not bad["finite"]  # a masked entry came back unmasked
    nan = metrics.parity(np.ones((2, 3)), np.array([[1, 1, np.nan], [1, 1, 1]]))
    assert not nan["finite"]


def test_allclose_with_masks():
    fmin = np.finfo(np.float32).min
    ref = np.array([1.0, fmin])
    assert metrics.allclose(ref, np.array([1.00001, fmin]), atol=1e-4, masked_below=-1e30)
    assert not metrics.allclose(ref, np.array([1.0, 0.0]), atol=1e-4, masked_below=-1e30)
    assert not metrics.allclose(ref, np.array([1.1, fmin]), atol=1e-4, masked_below=-1e30)


def test_row_axes_score_a_cache_per_token_over_all_heads():
    """(batch, heads, tokens, head_dim) with row_axes (1, 3): one row per (batch, token). A head whose
    vector is near zero and fully wrong weighs by its size, not as a whole bad row."""
    ref = np.ones((1, 2, 3, 4))
    ref[0, 1] = 1e-3  # head 1 nearly silent
    out = ref.copy()
    out[0, 1] = -1e-3  # ... and its direction flipped
    per_vector = metrics.parity(ref, out)
    per_token = metrics.parity(ref, out, row_axes=(1, 3))
    assert per_vector["cosine_min"] == pytest.approx(-1.0)
    assert per_token["cosine_min"] == pytest.approx((4 - 4e-6) / (4 + 4e-6))
    assert per_token["n_rows"] == 3
    out[0, 0, 2] = -1.0  # a loud head wrong at token 2: that token's row is bad either way
    assert metrics.parity(ref, out, row_axes=(1, 3))["cosine_min"] < 0
