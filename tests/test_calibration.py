"""The realistic inputs' sources (vlexport.calibration): the embedded corpus, and photographs given whole as
well as cropped, so precision gates see what users send (a whole dark star field as well as crops)."""

from __future__ import annotations

import numpy as np
import pytest

from vlexport import calibration


def test_corpus_has_questions_and_captions():
    q, c = calibration.texts("questions"), calibration.texts("captions")
    assert len(q) >= 40 and len(c) >= 20 and all(t and not t.startswith("#") for t in q + c)
    with pytest.raises(ValueError, match="corpus kind must be"):
        calibration.texts("poems")


def test_photo_crops_mix_whole_photographs_and_crops():
    photos = calibration.photographs()
    if not photos:
        pytest.skip("no photographs: scikit-image (test extra) is not installed")
    shapes = {p.shape for p in photos}
    imgs = calibration.photo_crops(np.random.default_rng(0), 80)
    whole = [i for i in imgs if any(i.shape == p.shape and np.array_equal(i, p) for p in photos)]
    assert 8 <= len(whole) <= 35  # about WHOLE_SHARE of 80
    assert any(i.shape not in shapes for i in imgs)  # the rest are crops
    every = calibration.photo_crops(np.random.default_rng(1), 6, whole=1.0)
    assert all(any(np.array_equal(i, p) for p in photos) for i in every)
    assert all(i.dtype == np.uint8 and i.ndim == 3 and min(i.shape[:2]) >= 32
               for i in calibration.photo_crops(np.random.default_rng(2), 20, whole=0.0))
    a, b = (calibration.photo_crops(np.random.default_rng(5), 10) for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # deterministic per seed
