"""TV-L1 in torch (vfer.tvl1) against OpenCV's DualTVL1OpticalFlow with the same parameters."""

import shutil

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vfer import tvl1  # noqa: E402

FACE = np.s_[49:161, 84:196]  # a 112 x 112 box around the demo face


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Torch on one thread: steadier and, on a small busy machine, faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def opencv_tvl1(prev, nxt, tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
                inner_iterations=30, outer_iterations=10, scale_step=0.8, median_filtering=5):
    solver = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=tau, lambda_=lambda_, theta=theta, nscales=nscales, warps=warps, epsilon=epsilon,
        innnerIterations=inner_iterations, outerIterations=outer_iterations,
        scaleStep=scale_step, gamma=0.0, medianFiltering=median_filtering, useInitialFlow=False)
    return solver.calc(prev, nxt, None)


def textured(size=96, seed=0):
    """A smooth random 8-bit texture with structure at several scales."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    for sigma in (1.5, 3.0, 6.0):
        img += cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0),
                                sigma) * sigma
    return ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


def known_motion(kind, size=96):
    """A texture, the texture moved by a (1.3, -0.7) px translation or a 2 degree rotation
    about the centre, and the true flow (prev(p) = nxt(p + flow(p)))."""
    prev = textured(size)
    if kind == "translation":
        matrix = np.float64([[1, 0, 1.3], [0, 1, -0.7]])
    else:
        matrix = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), 2.0, 1.0)
    nxt = cv2.warpAffine(prev, matrix, (size, size), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REFLECT)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xs, ys], -1)
    truth = pts @ matrix[:, :2].T + matrix[:, 2] - pts
    return prev, nxt, truth.astype(np.float32)


def epe(a, b, margin=0):
    err = np.linalg.norm(a - b, axis=-1)
    return float(err[margin:err.shape[0] - margin, margin:err.shape[1] - margin].mean())


@pytest.fixture(scope="module")
def face(demo_clip):
    """Grayscale 112 x 112 face crops of the demo surprise clip, where the mouth opens."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[FACE] for f in demo_clip[1]])


@pytest.mark.parametrize("kind", ["translation", "rotation"])
def test_known_motion_as_accurate_as_opencv(kind):
    prev, nxt, truth = known_motion(kind)
    ours = tvl1.tvl1(prev[None], nxt[None], device="cpu")[0]
    theirs = opencv_tvl1(prev, nxt)
    e_ours, e_theirs = epe(ours, truth, 8), epe(theirs, truth, 8)
    print(f"{kind}: EPE OpenCV {e_theirs:.4f} torch {e_ours:.4f} "
          f"between them {epe(ours, theirs, 8):.4f} px")
    assert abs(e_ours - e_theirs) <= 0.05
    assert e_ours < 0.15 and e_theirs < 0.15


@pytest.mark.parametrize("params", [
    dict(median_filtering=1), dict(median_filtering=3, warps=3),
    dict(nscales=3, scale_step=0.5, tau=0.125, lambda_=0.3, theta=0.5),
    dict(epsilon=0.05, inner_iterations=10, outer_iterations=3)])
def test_parameters_mean_what_they_mean_in_opencv(params):
    prev, nxt, _ = known_motion("rotation", 64)
    ours = tvl1.tvl1(prev[None], nxt[None], device="cpu", **params)[0]
    between = epe(ours, opencv_tvl1(prev, nxt, **params))
    print(f"{params}: mean EPE OpenCV vs torch {between:.4f} px")
    assert between <= 0.05


def test_one_scale_one_warp_matches_opencv_to_float_rounding():
    """Without a pyramid (whose resize OpenCV may leave to Intel IPP, which rounds its own way)
    the same operations in the same order give OpenCV's flow to float rounding."""
    prev, nxt, _ = known_motion("translation", 64)
    ours = tvl1.tvl1(prev[None], nxt[None], nscales=1, warps=1, device="cpu")[0]
    np.testing.assert_allclose(ours, opencv_tvl1(prev, nxt, nscales=1, warps=1), atol=1e-4)


def test_demo_face_flow_agrees_with_opencv(face):
    prev, nxt = face[27], face[28]
    ours = tvl1.tvl1(prev[None], nxt[None], device="cpu")[0]
    theirs = opencv_tvl1(prev, nxt)
    print(f"demo face 27->28: mean |flow| OpenCV {np.linalg.norm(theirs, axis=-1).mean():.3f}, "
          f"mean EPE OpenCV vs torch {epe(ours, theirs):.4f} px")
    assert np.linalg.norm(theirs, axis=-1).mean() > 0.1  # the face moves
    assert epe(ours, theirs) <= 0.1


def test_a_batch_gives_each_pair_its_flow_alone(face):
    prev, nxt = face[[25, 27, 29]], face[[26, 28, 30]]
    batch = tvl1.tvl1(prev, nxt, device="cpu")
    assert batch.shape == (3, 112, 112, 2) and batch.dtype == np.float32
    for k in range(3):
        np.testing.assert_allclose(batch[k], tvl1.tvl1(prev[k:k + 1], nxt[k:k + 1],
                                                       device="cpu")[0], atol=1e-5)



@pytest.fixture(scope="module")
def alone(face):
    """Six demo face pairs (a still start, the mouth opening) and each one's flow computed alone."""
    prev, nxt = face[[0, 20, 24, 26, 28, 30]], face[[1, 21, 25, 27, 29, 31]]
    return prev, nxt, np.concatenate([tvl1.tvl1(prev[k:k + 1], nxt[k:k + 1], device="cpu")
                                      for k in range(len(prev))])


@pytest.mark.parametrize("schedule", [(4, 0.75, 1), (3, 0.5, 0), (1, 0.9, 2)])
def test_pairs_that_stopped_keep_their_flow_in_a_masked_batch(alone, monkeypatch, schedule):
    """The CUDA schedule (stopping tests every few iterations, stopped pairs masked until they
    are a quarter of the working batch, the count of pairs still iterating read one check
    late) gives each pair the flow it gets alone."""
    monkeypatch.setitem(tvl1._SCHEDULE, "cpu", schedule)
    prev, nxt, flows = alone
    np.testing.assert_array_equal(tvl1.tvl1(prev, nxt, device="cpu"), flows)


@pytest.mark.skipif(not shutil.which("g++"), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_steps_give_the_flows_of_the_eager_steps(alone):
    """The path CUDA takes by default (warp, median and iterations fused by torch.compile), run
    on the CPU: the flows of the operation-by-operation path to float rounding."""
    prev, nxt, flows = alone
    ours = tvl1.tvl1(prev[:4], nxt[:4], device="cpu", compiled=True)
    assert epe(ours, flows[:4]) < 1e-4


@pytest.fixture
def triton_check(monkeypatch):
    """runtime.triton_can_build re-evaluated for each setting a test makes (it is cached)."""
    from vfer import runtime

    runtime.triton_can_build.cache_clear()
    yield runtime
    runtime.triton_can_build.cache_clear()


def test_compiled_by_default_on_cuda_with_triton_only(monkeypatch, triton_check):
    runtime = triton_check
    monkeypatch.setattr(runtime.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(runtime.Path, "is_file", lambda self: True)
    assert not runtime.compiles_by_default("cpu")
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    assert not runtime.compiles_by_default(torch.device("cuda:0"))
    runtime.triton_can_build.cache_clear()
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: name == "triton")
    assert runtime.compiles_by_default(torch.device("cuda:0"))


@pytest.mark.parametrize("lacking", ["compiler", "headers"])
def test_cuda_flows_stay_uncompiled_when_triton_cannot_build(monkeypatch, caplog, triton_check,
                                                            lacking):
    """Triton compiles its kernel launchers with a C compiler and Python's headers at the first
    compiled call; without either, the flows run uncompiled and a warning names what is
    missing, instead of the flow job failing."""
    runtime = triton_check
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: name == "triton")
    monkeypatch.delenv("CC", raising=False)
    no_compiler = lacking == "compiler"
    monkeypatch.setattr(runtime.shutil, "which",
                        lambda name: None if no_compiler else f"/usr/bin/{name}")
    monkeypatch.setattr(runtime.Path, "is_file", lambda self: no_compiler)
    with caplog.at_level("WARNING", logger="vfer.runtime"):
        assert not runtime.compiles_by_default(torch.device("cuda:0"))
    assert ("C compiler" if no_compiler else "Python.h") in caplog.text


def test_cc_names_the_compiler_triton_uses(monkeypatch, triton_check):
    runtime = triton_check
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: name == "triton")
    monkeypatch.setattr(runtime.Path, "is_file", lambda self: True)
    monkeypatch.setattr(runtime.shutil, "which",
                        lambda name: "/opt/cc/bin/icx" if name == "icx" else None)
    monkeypatch.setenv("CC", "icx -O2")
    assert runtime.compiles_by_default("cuda")
    runtime.triton_can_build.cache_clear()
    monkeypatch.setenv("CC", "missing-cc")
    assert not runtime.compiles_by_default("cuda")


def test_tvl1_batch_takes_and_returns_tensors():
    prev, nxt, _ = known_motion("translation", 32)
    flow = tvl1.tvl1_batch(torch.from_numpy(prev).float()[None],
                           torch.from_numpy(nxt).float()[None], nscales=2)
    assert flow.shape == (1, 2, 32, 32) and flow.dtype == torch.float32
    with pytest.raises(ValueError):
        tvl1.tvl1_batch(torch.zeros(32, 32), torch.zeros(32, 32))
    with pytest.raises(ValueError):
        tvl1.tvl1_batch(torch.zeros(1, 32, 32), torch.zeros(1, 32, 32), median_filtering=4)
    with pytest.raises(TypeError):
        tvl1.tvl1(prev[None].astype(np.float32), nxt[None].astype(np.float32))
    assert tvl1.tvl1(np.zeros((0, 32, 32), np.uint8), np.zeros((0, 32, 32), np.uint8),
                     device="cpu").shape == (0, 32, 32, 2)  # as Horn-Schunck's
