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


def rotation2d(axis):
    """The 2D rotation taking ``axis`` onto +x."""
    c, s = axis / np.linalg.norm(axis)
    return np.array([[c, s], [-s, c]])


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    r = rotation(25)
    dst = 2.5 * src @ r.T + np.array([1.0, -2.0, 0.5])
    s, rot, t = descriptors.similarity(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(rot, r, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-9)


BLOCK = len(LANDMARKS) * 2  # one (x, y) value per landmark


def blocks(feats):
    """The 8 blocks of a segment's landmark features, by name."""
    names = ["disp_mean", "disp_std", "disp_last", "vs_video", "shape_mean", "shape_last",
             "change_mean", "change_last"]
    return {n: feats[i * BLOCK:(i + 1) * BLOCK].reshape(-1, 2) for i, n in enumerate(names)}


def test_head_motion_alone_gives_no_landmark_dynamics_and_the_same_shape():
    seq = face_sequence()
    moved = np.stack([(1 + 0.1 * t) * f @ rotation(3 * t).T + [20 * t, 5, 0] for t, f in enumerate(seq)])
    feats = descriptors.landmark_features(moved, np.arange(16)[None])
    assert feats.shape == (1, 8 * BLOCK)
    b = blocks(feats[0])
    for name in ("disp_mean", "disp_std", "disp_last", "vs_video", "change_mean", "change_last"):
        assert np.abs(b[name]).max() < 1e-6, name
    # The geometry is the face's own shape, whatever its position, size and roll.
    still = blocks(descriptors.landmark_features(seq, np.arange(16)[None])[0])
    np.testing.assert_allclose(b["shape_mean"], still["shape_mean"], atol=1e-9)
    np.testing.assert_allclose(b["shape_last"], still["shape_mean"], atol=1e-9)
    right = seq[0, descriptors.RIGHT_EYE, :2].mean(0)
    left = seq[0, descriptors.LEFT_EYE, :2].mean(0)
    by_hand = (seq[0, LANDMARKS, :2] - (right + left) / 2) @ rotation2d(left - right).T \
        / np.linalg.norm(left - right)
    np.testing.assert_allclose(still["shape_mean"], by_hand, atol=1e-9)


def test_a_clip_held_at_its_apex_still_carries_the_expression():
    neutral, smile = face_sequence(), face_sequence()
    lips = [61, 291]
    smile[:, lips, 1] -= 0.15  # corners raised in every frame: no motion at all
    segment = np.arange(16)[None]
    a = blocks(descriptors.landmark_features(neutral, segment)[0])
    b = blocks(descriptors.landmark_features(smile, segment)[0])
    for name in ("disp_mean", "disp_std", "disp_last", "vs_video", "change_mean"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)  # dynamics cannot tell them apart
    rows = [int(np.flatnonzero(LANDMARKS == i)[0]) for i in lips]
    eyes = np.linalg.norm(neutral[0, descriptors.LEFT_EYE, :2].mean(0)
                          - neutral[0, descriptors.RIGHT_EYE, :2].mean(0))
    diff = b["shape_mean"] - a["shape_mean"]  # the geometry can: 0.15 in eye-distance units
    np.testing.assert_allclose(np.linalg.norm(diff[rows], axis=1), 0.15 / eyes, rtol=1e-5)
    assert np.abs(np.delete(diff, rows, axis=0)).max() < 1e-6
    np.testing.assert_allclose(b["shape_last"], b["shape_mean"], atol=1e-6)


def test_change_from_the_clips_first_frame_spans_segments():
    seq = face_sequence(T=32)
    lips = [61, 291]
    for t in range(32):
        seq[t, lips, 1] -= 0.01 * t  # the corners rise over the whole clip
    feats = descriptors.landmark_features(seq, np.stack([np.arange(16), np.arange(16, 32)]))
    rows = [int(np.flatnonzero(LANDMARKS == i)[0]) for i in lips]
    first, second = blocks(feats[0]), blocks(feats[1])
    # The second segment's own displacement matches the first's; its change from frame 0 is
    # larger by the 16 frames between them.
    np.testing.assert_allclose(second["disp_last"][rows], first["disp_last"][rows], atol=1e-3)
    eyes = np.linalg.norm(seq[0, descriptors.LEFT_EYE, :2].mean(0)
                          - seq[0, descriptors.RIGHT_EYE, :2].mean(0))
    step = second["change_last"][rows] - first["change_last"][rows]
    np.testing.assert_allclose(np.linalg.norm(step, axis=1), 0.16 / eyes, rtol=1e-5)


def test_moving_mouth_points_show_up_in_their_features():
    seq = face_sequence()
    lips = [61, 291]  # mouth corners
    for t in range(16):
        seq[t, lips, 1] -= 0.01 * t  # corners rise over the segment
    feats = descriptors.landmark_features(seq, np.arange(16)[None])[0]
    p = len(LANDMARKS)
    final = blocks(feats)["disp_last"]  # displacement at the last frame
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


def test_lbp_top_codes_only_pixels_inside_the_volume():
    """A flat volume is one code in every plane and block (no zero-padding codes at the
    borders), and a uniform brightness change leaves the descriptor as it is."""
    flat = descriptors.lbp_top(np.full((16, 64, 64), 90.0)).reshape(16 * 3, 59)
    assert (flat.max(1) == 1.0).all() and len(set(flat.argmax(1))) == 1
    rng = np.random.default_rng(1)
    volume = rng.integers(20, 100, (16, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(descriptors.lbp_top(volume), descriptors.lbp_top(volume + 150))
    with pytest.raises(ValueError, match="LBP-TOP needs at least 3 frames"):
        descriptors.lbp_top(volume[:2])


def test_static_video_has_no_hog_motion():
    frames = np.repeat(np.random.default_rng(2).integers(0, 255, (1, 64, 64, 3)).astype(np.uint8), 6, 0)
    feats = descriptors.handcrafted_features(frames, np.arange(6)[None], "hog")[0]
    assert np.abs(feats[1764:]).max() == 0.0
    assert np.abs(feats[:1764]).max() > 0.0
