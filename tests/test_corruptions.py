"""Test-time corruptions: strength 0 is the identity, each kind does what it says."""

import numpy as np
import pytest

from unetseg.data.corruptions import corrupt


def test_corruptions():
    rng = np.random.default_rng(0)
    image = rng.random((32, 40, 1)).astype(np.float32)
    for kind in ("contrast", "noise", "blur"):
        assert corrupt(image, kind, 0) is image
    flat = corrupt(image, "contrast", 1.0)
    assert np.allclose(flat, image.mean())
    assert corrupt(image, "contrast", 0.5).std() == pytest.approx(image.std() * 0.5, rel=1e-5)
    noisy = corrupt(image, "noise", 0.1, seed=3)
    assert np.array_equal(noisy, corrupt(image, "noise", 0.1, seed=3))
    assert (noisy - image).std() == pytest.approx(0.1, rel=0.1)
    blurred = corrupt(image, "blur", 2.0)
    assert blurred.shape == image.shape and blurred.std() < 0.5 * image.std()
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "fog", 1.0)
