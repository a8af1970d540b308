from fractions import Fraction

import numpy as np
import pytest

from vfer import dynamic
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
    # The values docs/methods.md quotes: alpha_1 = -25.47, peak 4.73 at t = 9, alpha_16 = 0.94.
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


def trending_sequence(T=16, shape=(6, 6, 3), seed=0):
    rng = np.random.default_rng(seed)
    slope = rng.normal(size=shape)
    return np.stack([10 + slope * t + rng.normal(size=shape) for t in range(T)])


def test_rank_svm_orders_the_smoothed_frames():
    frames = trending_sequence()
    u = dynamic.rank_svm_weights(frames)
    score = dynamic.rank_features(frames) @ u
    assert np.all(np.diff(score) > 0)
    reverse = dynamic.rank_svm_weights(frames[::-1])
    assert np.all(np.diff(dynamic.rank_features(frames[::-1]) @ reverse) > 0)


def test_rank_svm_dual_solver_equals_liblinear():
    from sklearn.svm import LinearSVR

    frames = trending_sequence(seed=3)
    v = dynamic.rank_features(frames)
    svr = LinearSVR(C=1.0, epsilon=0.1, loss="squared_epsilon_insensitive", dual=True,
                    fit_intercept=True, intercept_scaling=1.0, tol=1e-10, max_iter=200000)
    svr.fit(v, np.arange(1.0, 17.0))
    np.testing.assert_allclose(dynamic.rank_svm_weights(frames), svr.coef_, atol=1e-6)


def test_rank_svm_image_follows_the_slope():
    frames = trending_sequence(shape=(8, 8, 1), seed=5)
    slope = np.diff(frames, axis=0).mean(0)
    img = dynamic.rank_svm_image(frames)
    assert img.shape == (8, 8, 1)
    assert np.corrcoef(img.ravel(), slope.ravel())[0, 1] > 0.5


@pytest.mark.parametrize("length", [1, 2, 8, 10, 16, 28, 32])
def test_a_still_sequence_pools_to_flat_grey_not_to_the_negated_frame(length):
    frame = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    image = dynamic_image(np.stack([frame] * length))
    assert not image.any()
    assert (dynamic.to_uint8(image) == 128).all()
    moving = np.random.default_rng(3).normal(size=(length, 8, 8, 3))
    plain = np.tensordot(dynamic.rank_pool_coefficients(length), moving, axes=(0, 0))
    np.testing.assert_allclose(dynamic_image(moving), plain, atol=1e-9)


def test_windows_of_half_overlap():
    assert dynamic.windows(60, 28)[:, 0].tolist() == [0, 14, 28]
    assert dynamic.windows(20, 28).tolist() == [list(range(20))]


def flow_shard(tmp_path, pairs, flows, segments):
    """A flow file and a segments file of one video 'v'."""
    from vfer.store import FlowFile, SegmentsFile

    with SegmentsFile.create(tmp_path / "segments.h5", {}) as s:
        s.write_video("v", segments, int(pairs.max()) + 1)
    index = np.array([[int(np.flatnonzero((pairs[:, 0] == a) & (pairs[:, 1] == b))[0])
                       for a, b in zip(seg[:-1], seg[1:])] for seg in segments])
    with FlowFile.create(tmp_path / "flow.h5", {"bound": 64.0}) as f:
        f.write_video("v", pairs, flows, index, store_raw=True)
    return SegmentsFile(tmp_path / "segments.h5"), FlowFile(tmp_path / "flow.h5")


def test_ordered_flow_maps_pool_windows_and_each_segment_uses_the_nearest(tmp_path):
    n = 46
    pairs = np.stack([np.arange(n - 1), np.arange(1, n)], 1)
    flows = np.zeros((n - 1, 4, 4, 2), np.float32)
    flows[..., 0] = np.arange(n - 1)[:, None, None]  # x flow = its index in time
    segments = np.arange(16)[None] + np.array([[7], [23]])  # frames 7..22 and 23..38
    segs, flow = flow_shard(tmp_path, pairs, flows, segments)
    with segs, flow:
        seqs, chosen = dynamic.video_sequences("flow", {"window": 28}, "v", None, segs, flow)
        assert [s[0, 0, 0, 0] for s in seqs] == [0, 14]  # windows of flows 0..27, 14..41
        assert all(len(s) == 28 for s in seqs)
        # window centres 14 and 28 (frames); segment centres 14.5 and 30.5
        assert chosen.tolist() == [[0], [1]]
        per_segment, index = dynamic.video_sequences("flow", {"window": None}, "v", None, segs,
                                                     flow)
        assert [s[0, 0, 0, 0] for s in per_segment] == [7, 23] and index.tolist() == [[0], [1]]


def test_ordered_flow_maps_need_consecutive_flows(tmp_path):
    pairs = np.array([[0, 1], [2, 3], [3, 4]])
    segs, flow = flow_shard(tmp_path, pairs, np.zeros((3, 4, 4, 2), np.float32),
                            np.array([[2, 3, 4]]))
    with segs, flow, pytest.raises(ValueError, match="flow.consecutive"):
        dynamic.video_sequences("flow", {"window": 28}, "v", None, segs, flow)

def test_linearly_weighted_moving_average_is_ren_eq3():
    x = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(dynamic.smooth(x, "lwma")[:, 0], [1.0, 5 / 3, 14 / 6])
    np.testing.assert_allclose(dynamic.smooth(x, "tvm")[:, 0], [1.0, 1.5, 2.0])


def test_pairwise_rank_svm_solves_its_primal():
    """The dual solution equals a direct solve of min |u|^2/2 + C sum_{i<j} hinge(1 - u'd_ij)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    frames = rng.normal(size=(6, 3)) + np.linspace(0, 2, 6)[:, None] * np.array([1.0, -0.5, 0.2])
    C = 0.5
    u = dynamic.rank_pairwise_image(frames, C=C, smoothing="lwma")
    m = dynamic.smooth(frames, "lwma")
    d = np.array([m[j] - m[i] for i in range(6) for j in range(i + 1, 6)])
    # the QP: min |u|^2/2 + C sum xi, xi >= 0, xi >= 1 - d u
    n = len(d)
    objective = lambda z: 0.5 * z[:3] @ z[:3] + C * z[3:].sum()  # noqa: E731
    cons = [{"type": "ineq", "fun": lambda z: d @ z[:3] - 1 + z[3:]},
            {"type": "ineq", "fun": lambda z: z[3:]}]
    best = minimize(objective, np.zeros(3 + n), constraints=cons, method="SLSQP",
                    options={"ftol": 1e-12, "maxiter": 500})
    np.testing.assert_allclose(u, best.x[:3], atol=1e-4)
    assert objective(np.concatenate([u, np.maximum(0, 1 - d @ u)])) <= best.fun + 1e-6
    reverse = dynamic.rank_pairwise_image(frames, C=C, reverse=True, smoothing="lwma")
    assert not np.allclose(reverse, u)


def test_per_channel_scaling_and_zero_levels():
    image = np.stack([np.array([[-2.0, 2.0]]), np.array([[0.0, 4.0]]), np.array([[1.0, 3.0]])],
                     axis=-1)  # 1 x 2 x 3: x in [-2, 2], y in [0, 4], third in [1, 3]
    per = dynamic.to_uint8(image, per_channel=True)
    assert per[0, 0].tolist() == [0, 0, 0] and per[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_allclose(dynamic.zero_level(image, per_channel=True), [0.5, 0.0, -0.5])
    whole = dynamic.to_uint8(image)  # over all channels: -2 -> 0, 4 -> 255
    assert whole[0, 0].tolist() == [0, 85, 128] and whole[0, 1].tolist() == [170, 255, 212]
    assert float(dynamic.zero_level(image)) == pytest.approx(2 / 6)
