from fractions import Fraction

import numpy as np

from vfer.dynamic import dynamic_image, rank_pool_coefficients, to_uint8


def exact_coefficients(T):
    """alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}) in exact rational arithmetic."""
    H = [Fraction(0)]
    for i in range(1, T + 1):
        H.append(H[-1] + Fraction(1, i))
    return [2 * (T - t + 1) - (T + 1) * (H[T] - H[t - 1]) for t in range(1, T + 1)]


def test_coefficients_for_16_frames_match_methods():
    alpha = rank_pool_coefficients(16)
    np.testing.assert_allclose(alpha, [float(a) for a in exact_coefficients(16)], atol=1e-6)
    # The values METHODS.md quotes: alpha_1 = -25.47, peak 4.73 at t = 9, alpha_16 = 0.94.
    assert round(alpha[0], 2) == -25.47
    assert int(np.argmax(alpha)) + 1 == 9 and round(alpha.max(), 2) == 4.73
    assert round(alpha[-1], 2) == 0.94
    assert abs(alpha.sum()) < 1e-9  # not T, as in the port that drops the "-1"


def test_dynamic_image_follows_per_pixel_slope():
    rng = np.random.default_rng(0)
    slope = rng.normal(size=(8, 8))
    offset = rng.normal(size=(8, 8)) * 10
    frames = np.stack([offset + slope * t for t in range(16)])
    d = dynamic_image(frames)
    assert np.corrcoef(d.ravel(), slope.ravel())[0, 1] > 0.99
    # A constant offset contributes nothing: the coefficients sum to zero.
    np.testing.assert_allclose(dynamic_image(np.stack([offset] * 16)), 0.0, atol=1e-9)


def test_to_uint8_min_max():
    out = to_uint8(np.array([[-2.0, 0.0], [1.0, 2.0]]))
    assert out.tolist() == [[0, 128], [191, 255]]
    assert to_uint8(np.zeros((2, 2))).tolist() == [[128, 128], [128, 128]]
