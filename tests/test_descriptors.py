import numpy as np
import pytest

from vfer import descriptors
from vfer.descriptors import LANDMARKS


def rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def face_sequence(T=16, seed=0):
    """478 random 3D points with the irises 1 apart, the same shape in every frame."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(478, 3))
    base[descriptors.RIGHT_IRIS] = [-0.5, 0, 0]
    base[descriptors.LEFT_IRIS] = [0.5, 0, 0]
    return np.stack([base] * T)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    r = rotation(25)
    dst = 2.5 * src @ r.T + np.array([1.0, -2.0, 0.5])
    s, rot, t = descriptors.similarity(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(rot, r, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-9)


def test_head_motion_alone_gives_no_landmark_dynamics():
    seq = face_sequence()
    moved = np.stack([(1 + 0.1 * t) * f @ rotation(3 * t).T + [20 * t, 5, 0] for t, f in enumerate(seq)])
    feats = descriptors.landmark_features(moved, np.arange(16)[None])
    assert feats.shape == (1, 4 * len(LANDMARKS) * 2)
    assert np.abs(feats).max() < 1e-6


def test_moving_mouth_points_show_up_in_their_features():
    seq = face_sequence()
    lips = [61, 291]  # mouth corners
    for t in range(16):
        seq[t, lips, 1] -= 0.01 * t  # corners rise over the segment
    feats = descriptors.landmark_features(seq, np.arange(16)[None])[0]
    p = len(LANDMARKS)
    final = feats[2 * p * 2:3 * p * 2].reshape(p, 2)  # displacement at the last frame
    rows = [int(np.flatnonzero(LANDMARKS == i)[0]) for i in lips]
    assert (final[rows, 1] < -0.1).all()
    others = np.delete(np.arange(p), rows)
    assert np.abs(final[others]).max() < 0.05 * np.abs(final[rows]).max()


def test_hog_and_lbp_top_shapes_and_histograms():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (8, 48, 48, 3)).astype(np.uint8)
    segs = np.arange(8)[None]
    feats = descriptors.handcrafted_features(frames, segs, "hog")
    assert feats.shape == (1, 2 * 1764)
    lbp = descriptors.handcrafted_features(frames, segs, "lbp_top")
    assert lbp.shape == (1, 1764 + 16 * 3 * 59)
    hist = lbp[0, 1764:].reshape(16 * 3, 59)
    np.testing.assert_allclose(hist.sum(1), 1.0, atol=1e-6)


def test_static_video_has_no_hog_motion():
    frames = np.repeat(np.random.default_rng(2).integers(0, 255, (1, 64, 64, 3)).astype(np.uint8), 6, 0)
    feats = descriptors.handcrafted_features(frames, np.arange(6)[None], "hog")[0]
    assert np.abs(feats[1764:]).max() == 0.0
    assert np.abs(feats[:1764]).max() > 0.0
