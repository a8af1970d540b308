import json
import shutil

import cv2
import numpy as np
import pytest

from vfer import flow
from vfer.store import FacesFile, FlowFile, SegmentsFile, dequantise, flow_image


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


def known_motion(kind):
    """A texture, the texture moved, and the true flow: a (3.0, -2.0) px translation, or a
    2 degree rotation about the centre (up to 1.6 px inside the 16 px margin)."""
    img = textured()
    n = img.shape[0]
    if kind == "translation":
        m = np.float32([[1, 0, 3.0], [0, 1, -2.0]])
    else:
        m = np.asarray(cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), 2.0, 1.0), np.float32)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    truth = np.stack([m[0, 0] * xs + m[0, 1] * ys + m[0, 2] - xs,
                      m[1, 0] * xs + m[1, 1] * ys + m[1, 2] - ys], -1)
    return img, warp(img, m), truth


# Mean interior endpoint error allowed per method (measured: see each reason).
# Translation: constant flow is exactly the model each method fits (Farneback's local
# polynomial shift, TV-L1's and Horn-Schunck's brightness constancy with a smooth field); what
# remains is the bicubic resampling and uint8 rounding of the test image, far below 0.05 px
# (measured 0.0005, 0.003, 0.007 px; the displacement is 3.6 px).
# Rotation: the flow varies by 0.035 px per px. Farneback assumes it constant over its 15 px
# window (measured 0.06 px, allowed 0.15); TV-L1 and Horn-Schunck model a smoothly varying
# field (measured 0.018 and 0.057 px, allowed 0.1: under 8% of the 1.3 px mean displacement).
THRESHOLDS = {
    ("farneback", "translation"): 0.05, ("tvl1", "translation"): 0.05,
    ("horn_schunck", "translation"): 0.05, ("farneback", "rotation"): 0.15,
    ("tvl1", "rotation"): 0.1, ("horn_schunck", "rotation"): 0.1,
}


@pytest.mark.parametrize("method, motion", sorted(THRESHOLDS))
def test_known_flows(method, motion):
    img, moved, truth = known_motion(motion)
    params = {"backend": "numpy"} if method == "horn_schunck" else {}
    est = flow.compute_flows(np.stack([img, moved]), np.array([[0, 1]]), method, params)[0]
    assert interior_epe(est, truth) < THRESHOLDS[method, motion]


def test_horn_schunck_torch_matches_numpy_and_batching_changes_nothing():
    img, moved, _ = known_motion("rotation")
    _, shifted, _ = known_motion("translation")
    a, b = np.stack([img, img, moved]), np.stack([moved, shifted, img])
    ref = flow.horn_schunck(a, b, "numpy")
    torch_flow = flow.horn_schunck(a, b, "torch", "cpu")
    assert np.abs(ref - torch_flow).max() < 1e-3  # float32 summation order only
    single = flow.horn_schunck(a[1:2], b[1:2], "numpy")
    np.testing.assert_allclose(single[0], ref[1], atol=1e-5)


@pytest.mark.skipif(not shutil.which("g++"), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_horn_schunck_iterations_match_the_plain_ones():
    """The path CUDA takes by default (each Jacobi update fused by torch.compile), on the CPU."""
    img, moved, truth = known_motion("rotation")
    _, shifted, _ = known_motion("translation")
    a, b = np.stack([img, img, moved]), np.stack([moved, shifted, img])
    plain = flow.horn_schunck(a, b, "torch", "cpu", compiled=False)
    compiled = flow.horn_schunck(a, b, "torch", "cpu", compiled=True)
    assert np.abs(plain - compiled).max() < 1e-4  # float32 rounding only
    assert interior_epe(compiled[0], truth) < THRESHOLDS["horn_schunck", "rotation"]


def test_flow_backends_resolve_to_the_cpu_implementations_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: auto means torch")
    assert flow.backend_of("tvl1", {"backend": "auto"}) == ("opencv", None)
    assert flow.backend_of("tvl1", {}) == ("opencv", None)
    assert flow.backend_of("tvl1", {"backend": "torch"}) == ("torch", "cpu")
    assert flow.backend_of("horn_schunck", {"backend": "auto"}) == ("numpy", None)
    assert flow.backend_of("farneback", {}) == ("opencv", None)
    with pytest.raises(ValueError, match="unknown flow backend 'numpy'; choose from auto, opencv"):
        flow.backend_of("tvl1", {"backend": "numpy"})


def test_device_cpu_keeps_every_flow_backend_on_the_cpu():
    """The config's device: cpu holds for flows as for networks; cuda requires CUDA."""
    torch = pytest.importorskip("torch")
    assert flow.backend_of("tvl1", {"backend": "auto"}, "cpu") == ("opencv", None)
    assert flow.backend_of("horn_schunck", {"backend": "auto"}, "cpu") == ("numpy", None)
    assert flow.backend_of("horn_schunck", {"backend": "torch"}, "cpu") == ("torch", "cpu")
    assert flow.backend_of("horn_schunck", {"backend": "numpy"}, "cuda") == ("numpy", None)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device: cuda was requested but torch sees no"):
            flow.backend_of("tvl1", {"backend": "auto"}, "cuda")
    assert [flow.uses_gpu(name, {"backend": backend}, device)
            for name, backend, device in [("horn_schunck", "auto", "auto"),
                                          ("tvl1", "torch", "cuda"),
                                          ("horn_schunck", "auto", "cpu"),
                                          ("horn_schunck", "numpy", "auto"),
                                          ("tvl1", "opencv", "auto"),
                                          ("farneback", "auto", "auto")]] == \
        [True, True, False, False, False, False]


def test_batched_solvers_take_equal_calls_of_at_most_a_batch(monkeypatch):
    """30 pairs in batches of at most 20: two calls of 15, the same flows as one call; padding
    pairs (a frame with itself) are not computed. On the host a call holds CPU_PIXELS pixels."""
    img, moved, _ = known_motion("translation")
    gray = np.stack([img, moved] * 16)
    pairs = np.array([[k, k + 1] for k in range(30)] + [[3, 3]])
    whole = flow.compute_flows(gray, pairs, "horn_schunck", {"backend": "numpy"}, batch=64)
    sizes, solve = [], flow.horn_schunck
    monkeypatch.setattr(flow, "horn_schunck",
                        lambda a, b, *args, **kw: sizes.append(len(a)) or solve(a, b, *args, **kw))
    split = flow.compute_flows(gray, pairs, "horn_schunck", {"backend": "numpy"}, batch=20)
    assert sizes == [15, 15]
    np.testing.assert_allclose(split, whole, atol=1e-6)
    assert not split[-1].any()
    for backend, shape in (("numpy", (112, 112)), ("torch", (227, 227)), ("torch", (1024, 1024))):
        n = flow.pairs_per_batch("horn_schunck", backend, None, shape)
        assert n == max(1, flow.CPU_PIXELS[backend] // (shape[0] * shape[1]))


def test_videos_are_grouped_up_to_a_batch_of_pairs():
    assert flow.group_videos([3, 2, 5, 1, 7, 2], 6) == [[0, 1], [2, 3], [4], [5]]
    assert flow.group_videos([], 6) == []


@pytest.fixture(scope="module")
def face_shard(tmp_path_factory, demo_clip):
    """Faces and segments files of two short videos of 64 x 64 crops of the demo clip's face:
    frames 25-29 (the mouth opens) and every third frame of 2-8 (the expression's onset, larger
    motion), whose segment ends with a padding pair (2, 2)."""
    crops = np.stack([cv2.resize(f[49:161, 84:196], (64, 64), interpolation=cv2.INTER_AREA)
                      for f in demo_clip[1]])
    folder = tmp_path_factory.mktemp("shard")
    videos = {"a": (crops[25:30], [[0, 1, 2, 3], [1, 2, 3, 4]]),
              "b": (crops[2:9:3], [[0, 1, 2, 2]])}
    with FacesFile.create(folder / "faces.h5", {}) as f, \
            SegmentsFile.create(folder / "segments.h5", {}) as s:
        for vid, (frames, segments) in videos.items():
            n = len(frames)
            f.write_video(vid, frames, np.zeros((n, 4), np.float32), np.ones(n, np.float32),
                          np.zeros((n, 2, 2), np.float32), np.zeros((n, 478, 3), np.float32),
                          np.ones(n, bool), np.arange(n, dtype=np.int32),
                          np.arange(n, dtype=np.int32), {})
            s.write_video(vid, np.array(segments), n)
    return str(folder / "faces.h5"), str(folder / "segments.h5")


def test_torch_tvl1_in_the_flow_stage_agrees_with_opencv(face_shard, tmp_path):
    """The stage with backend torch (both videos in one batch) against backend opencv."""
    out = {}
    for backend in ("opencv", "torch"):
        path = tmp_path / f"{backend}.h5"
        flow.process_shard(*face_shard, str(path), "tvl1", {"backend": backend}, 4.0, False, {},
                           store_raw=True)
        with FlowFile(path) as f:
            assert json.loads(f.attrs["backend"]) == \
                list(flow.backend_of("tvl1", {"backend": backend}))
            out[backend] = {v: (f.pairs(v), f.segment_pairs(v), f.flows(v)) for v in f.videos()}
    assert sorted(out["torch"]) == ["a", "b"]
    for vid, (pairs, segment_pairs, theirs) in out["opencv"].items():
        torch_pairs, torch_segment_pairs, ours = out["torch"][vid]
        np.testing.assert_array_equal(pairs, torch_pairs)
        np.testing.assert_array_equal(segment_pairs, torch_segment_pairs)
        moving = pairs[:, 0] != pairs[:, 1]
        assert not ours[~moving].any()  # padding: zero flow
        size = np.linalg.norm(theirs[moving], axis=-1).mean()
        epe = np.linalg.norm(ours[moving] - theirs[moving], axis=-1).mean()
        print(f"{vid}: mean |flow| {size:.3f} px, mean EPE OpenCV vs torch {epe:.4f} px")
        assert epe <= 0.1 and epe < 0.2 * size  # measured 0.011 of 0.14 and 0.012 of 0.49 px


def test_a_bound_that_clips_much_of_the_flow_is_warned_about(face_shard, tmp_path, caplog):
    shares = {}
    for bound in (4.0, 0.05):
        path = tmp_path / f"bound{bound}.h5"
        flow.process_shard(*face_shard, str(path), "farneback", {}, bound, False, {},
                           store_raw=True)
        with FlowFile(path) as f:
            shares[bound] = float(f.attrs["clipped_share"])
            flows = np.concatenate([f.flows(v) for v in f.videos()])
        assert shares[bound] == pytest.approx((np.abs(flows) > bound).any(-1).mean(), abs=1e-3)
    assert shares[4.0] < flow.CLIPPED_WARNING < shares[0.05]
    assert caplog.text.count("of the flow vectors exceed the bound") == 1
    assert "exceed the bound of 0.05 px" in caplog.text


def test_threads_do_not_change_opencv_results():
    img, moved, _ = known_motion("rotation")
    gray = np.stack([img, moved, img])
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    one = flow.compute_flows(gray, pairs, "tvl1", {"nscales": 3, "warps": 2}, threads=1)
    two = flow.compute_flows(gray, pairs, "tvl1", {"nscales": 3, "warps": 2}, threads=2)
    np.testing.assert_array_equal(one, two)


def test_flow_image_mapping():
    bound = 20.0
    f = np.array([[[0.0, 0.0], [20.0, -20.0], [40.0, 10.0], [-5.0, 0.0]]], np.float32)
    img = flow_image(f, bound)
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


def test_consecutive_pairs_are_added_once():
    pairs = np.array([[0, 0], [0, 1], [3, 4]])
    out = flow.with_consecutive(pairs, 5)
    assert out.tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]


def test_hsv_coding_maps_direction_to_hue():
    f = np.zeros((2, 2, 2), np.float32)
    f[0, 0] = (1, 0)   # right: red
    f[0, 1] = (-1, 0)  # left: cyan
    rgb = flow.flow_to_hsv_rgb(f)
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 1]) == (0, 255, 255)
    assert tuple(rgb[1, 1]) == (0, 0, 0)  # no motion: black


def test_dequantise_inverts_the_image_within_a_quantisation_step():
    rng = np.random.default_rng(0)
    f = rng.uniform(-3, 3, (4, 5, 5, 2)).astype(np.float32)
    back = dequantise(flow_image(f, bound=4.0), bound=4.0)
    assert np.abs(back - f).max() <= 4.0 / 255.0 + 1e-6  # half of the 8 / 255 px step
