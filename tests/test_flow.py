import cv2
import numpy as np

from vfer import flow


def textured(size=128, seed=0):
    """A smooth random texture (uint8) with structure at several scales."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    for sigma in (1.5, 3.0, 6.0):
        img += cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), sigma) * sigma
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def warp(img, matrix):
    return cv2.warpAffine(img, matrix, img.shape[::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def interior_epe(estimated, truth, margin=16):
    err = np.linalg.norm(estimated - truth, axis=-1)
    return float(err[margin:-margin, margin:-margin].mean())


def test_farneback_recovers_a_translation():
    img = textured()
    shifted = warp(img, np.float32([[1, 0, 3.0], [0, 1, -2.0]]))
    est = flow.farneback(img, shifted)
    truth = np.broadcast_to(np.float32([3.0, -2.0]), est.shape)
    # Farneback fits local polynomials; on this texture its interior error is ~0.1 px.
    assert interior_epe(est, truth) < 0.3


def test_farneback_recovers_a_rotation():
    img = textured()
    c = (img.shape[1] - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), 2.0, 1.0)
    rotated = warp(img, m)
    est = flow.farneback(img, rotated)
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
    target = np.stack([m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]], -1)
    truth = target - np.stack([xs, ys], -1)  # up to 2.2 px at the corners
    assert interior_epe(est, truth) < 0.3


def test_flow_image_mapping():
    bound = 20.0
    f = np.array([[[0.0, 0.0], [20.0, -20.0], [40.0, 10.0], [-5.0, 0.0]]], np.float32)
    img = flow.flow_image(f, bound)
    assert img[0, 0].tolist() == [128, 128, 0]
    assert img[0, 1].tolist() == [255, 0, 255]  # |(20, -20)| = bound * sqrt(2)
    assert img[0, 2, 0] == 255  # clipped to +bound
    assert img[0, 3].tolist() == [96, 128, 45]  # -5 -> 95.6; |5| / (20 sqrt 2) * 255 = 45.1


def test_pairs_are_computed_once_and_padding_costs_nothing():
    segments = np.array([[0, 0, 1, 2, 3, 3], [2, 3, 4, 5, 6, 7]])
    pairs, index = flow.segment_pairs(segments)
    np.testing.assert_array_equal(pairs[index], np.stack([segments[:, :-1], segments[:, 1:]], -1))
    assert len(pairs) == len({tuple(p) for p in pairs}) == 9  # 10 pairs, (2, 3) shared
    calls = []
    gray = np.zeros((8, 4, 4), np.uint8)
    out = flow.compute_pairs(gray, pairs, lambda a, b: calls.append(1) or np.ones((4, 4, 2), np.float32))
    assert len(calls) == 7  # (0, 0) and (3, 3) are padding: zero flow, not computed
    assert out[(pairs[:, 0] == pairs[:, 1])].max() == 0.0
