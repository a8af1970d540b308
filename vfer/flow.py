"""Optical flow between the frame pairs of segments, and 8-bit flow images (docs/methods.md).

Methods: ``farneback`` and ``tvl1`` (OpenCV, one pair per call, pairs spread over threads),
``tvl1`` in torch (vfer.tvl1: OpenCV's DualTVL1 batched over pairs, for CUDA) and
``horn_schunck`` (ours: batched over pairs, coarse-to-fine with warping, in numpy or in torch;
both run the same operations; on CUDA each Jacobi iteration runs fused by torch.compile). The
torch backends take as many pairs per call as device memory holds, across the videos of a
shard. Each distinct pair of a video is computed once; a pair of
identical frame indices (padding) has zero flow without computing.

The flow images that store them are encoded by vfer.store (flow_image, dequantise).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from vfer.runtime import compiles_by_default, to_host

log = logging.getLogger(__name__)

#: Share of a shard's flow vectors beyond the bound (clipped in the flow images) above which
#: the flow stage warns: the images then lose the motion the bound was meant to keep.
CLIPPED_WARNING = 0.01

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
METHODS = ("farneback", "tvl1", "horn_schunck")


def farneback(prev: np.ndarray, nxt: np.ndarray, pyr_scale: float = 0.5, levels: int = 3,
              winsize: int = 15, iterations: int = 3, poly_n: int = 5,
              poly_sigma: float = 1.2) -> np.ndarray:
    """Dense Farneback flow (H x W x 2 float32, pixels) from two grayscale uint8 images."""
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale, levels, winsize,
                                        iterations, poly_n, poly_sigma, 0)


def tvl1_solver(tau: float = 0.25, lambda_: float = 0.15, theta: float = 0.3, nscales: int = 5,
                warps: int = 5, epsilon: float = 0.01, inner_iterations: int = 30,
                outer_iterations: int = 10, scale_step: float = 0.8, median_filtering: int = 5):
    """OpenCV's Dual TV-L1 (Zach-Pock-Bischof with Wedel's median filtering)."""
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=tau, lambda_=lambda_, theta=theta, nscales=nscales, warps=warps, epsilon=epsilon,
        innnerIterations=inner_iterations, outerIterations=outer_iterations,
        scaleStep=scale_step, gamma=0.0, medianFiltering=median_filtering, useInitialFlow=False)


# --- Horn-Schunck, written once over a minimal array backend --------------------------------

class _NumpyOps:
    """The few array operations Horn-Schunck needs, for numpy (B x H x W float32)."""

    @staticmethod
    def correlate(x, k, axis):
        from scipy.ndimage import correlate1d

        return correlate1d(x, np.asarray(k, x.dtype), axis=axis, mode="nearest")

    @staticmethod
    def zeros(x):
        return np.zeros_like(x)

    @staticmethod
    def clip(x, lo, hi):
        return np.clip(x, lo, hi)

    @staticmethod
    def floor_int(x):
        return np.floor(x).astype(np.int64)

    @staticmethod
    def grid(h, w, like):
        xs, ys = np.meshgrid(np.arange(w, dtype=like.dtype), np.arange(h, dtype=like.dtype))
        return xs[None], ys[None]

    @staticmethod
    def batch_index(b, like):
        return np.arange(b)[:, None, None]


class _TorchOps:
    """The same operations for torch tensors (any device)."""

    @staticmethod
    def correlate(x, k, axis):
        import torch.nn.functional as F

        r, n = len(k) // 2, x.shape[axis]
        pad = (r, r, 0, 0) if axis == 2 else (0, 0, r, r)
        p = F.pad(x[:, None], pad, mode="replicate")[:, 0]
        return sum(c * p.narrow(axis, i, n) for i, c in enumerate(k) if c)

    @staticmethod
    def zeros(x):
        import torch

        return torch.zeros_like(x)

    @staticmethod
    def clip(x, lo, hi):
        return x.clamp(lo, hi)

    @staticmethod
    def floor_int(x):
        return x.floor().long()

    @staticmethod
    def grid(h, w, like):
        import torch

        ys, xs = torch.meshgrid(torch.arange(h, dtype=like.dtype, device=like.device),
                                torch.arange(w, dtype=like.dtype, device=like.device),
                                indexing="ij")
        return xs[None], ys[None]

    @staticmethod
    def batch_index(b, like):
        import torch

        return torch.arange(b, device=like.device)[:, None, None]


_BLUR = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
_DERIV = (1 / 12, -8 / 12, 0.0, 8 / 12, -1 / 12)  # 5-point central difference
_ONE_TWO_ONE = (1.0, 2.0, 1.0)


def _blur(ops, x):
    return ops.correlate(ops.correlate(x, _BLUR, 2), _BLUR, 1)


def _neighbour_average(ops, x):
    """K * x with K = [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 (Horn-Schunck's u_bar), computed
    as the separable [1, 2, 1] x [1, 2, 1] filter minus the centre."""
    return (ops.correlate(ops.correlate(x, _ONE_TWO_ONE, 2), _ONE_TWO_ONE, 1) - 4.0 * x) / 12.0


def _sample(ops, img, xs, ys):
    """Bilinear samples of (B, H, W) images at pixel coordinates (B, h, w), clamped to edges."""
    h, w = img.shape[-2:]
    xs, ys = ops.clip(xs, 0, w - 1), ops.clip(ys, 0, h - 1)
    x0, y0 = ops.clip(ops.floor_int(xs), 0, w - 2), ops.clip(ops.floor_int(ys), 0, h - 2)
    fx, fy = xs - x0, ys - y0
    b = ops.batch_index(img.shape[0], img)
    top = img[b, y0, x0] * (1 - fx) + img[b, y0, x0 + 1] * fx
    bottom = img[b, y0 + 1, x0] * (1 - fx) + img[b, y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _resize(ops, img, h, w):
    """Bilinear resize of (B, H0, W0) to (B, h, w) with half-pixel centres."""
    h0, w0 = img.shape[-2:]
    xs, ys = ops.grid(h, w, img)
    return _sample(ops, img, (xs + 0.5) * (w0 / w) - 0.5, (ys + 0.5) * (h0 / h) - 0.5)


def _jacobi_step(ops, u, v, ix, iy, it, denom):
    """One Horn-Schunck update of the flow (u, v)."""
    ub, vb = _neighbour_average(ops, u), _neighbour_average(ops, v)
    step = (ix * ub + iy * vb + it) / denom
    return ub - ix * step, vb - iy * step


@functools.lru_cache
def _compiled_jacobi_step():
    """_jacobi_step on torch tensors fused by torch.compile into one pass over the arrays
    (dynamic shapes: one compilation for every batch size and pyramid level)."""
    import torch

    return torch.compile(functools.partial(_jacobi_step, _TorchOps), dynamic=True)


def _jacobi(ops, u, v, ix, iy, it, denom, iterations: int, compiled: bool = False):
    """``iterations`` Horn-Schunck updates; ``compiled`` (torch tensors): each fused."""
    step = _compiled_jacobi_step() if compiled else functools.partial(_jacobi_step, ops)
    for _ in range(iterations):
        u, v = step(u, v, ix, iy, it, denom)
    return u, v


def horn_schunck_batch(prev, nxt, ops, alpha: float = 0.03, iterations: int = 30, warps: int = 2,
                       levels: int = 5, min_size: int = 16, compiled: bool = False):
    """Horn-Schunck flow of image batches (B, H, W) with intensities in [0, 1].

    Coarse to fine over a binomial pyramid; at each level the second image is warped by the
    current flow ``warps`` times and the flow is refined by ``iterations`` Jacobi updates
    u <- u_bar - I_x (I_x u_bar + I_y v_bar + I_t) / (alpha^2 + I_x^2 + I_y^2), with
    u_bar the 3x3 weighted neighbour average and I_t linearised around the current flow.
    With ``compiled`` (torch tensors only) each update runs fused by torch.compile. Returns
    (u, v) in pixels of the input.
    """
    pyramid = [(prev, nxt)]
    while len(pyramid) < levels and min(pyramid[-1][0].shape[-2:]) // 2 >= min_size:
        a, b = pyramid[-1]
        pyramid.append((_blur(ops, a)[:, ::2, ::2], _blur(ops, b)[:, ::2, ::2]))
    u = v = None
    for a, b in reversed(pyramid):
        h, w = a.shape[-2:]
        if u is None:
            u, v = ops.zeros(a), ops.zeros(a)
        else:
            sy, sx = h / u.shape[-2], w / u.shape[-1]
            u, v = _resize(ops, u, h, w) * sx, _resize(ops, v, h, w) * sy
        a_s, b_s = _blur(ops, a), _blur(ops, b)
        xs, ys = ops.grid(h, w, a)
        for _ in range(warps):
            warped = _sample(ops, b_s, xs + u, ys + v)
            mean = 0.5 * (a_s + warped)
            ix, iy = ops.correlate(mean, _DERIV, 2), ops.correlate(mean, _DERIV, 1)
            it = warped - a_s - ix * u - iy * v  # linearised around the current flow
            denom = alpha * alpha + ix * ix + iy * iy
            u, v = _jacobi(ops, u, v, ix, iy, it, denom, iterations, compiled)
    return u, v


def horn_schunck(prev: np.ndarray, nxt: np.ndarray, backend: str = "numpy", device=None,
                 compiled: bool | None = None, **params) -> np.ndarray:
    """Horn-Schunck flow (B x H x W x 2 float32) of uint8 image batches (B x H x W).

    ``backend`` numpy or torch (``device`` e.g. "cuda"); both compute in float32 and give the
    same flows to float32 summation order. ``compiled`` (torch): each Jacobi update fused by
    torch.compile, by default where runtime.compiles_by_default (CUDA, Triton able to build).
    """
    if backend == "numpy":
        a = prev.astype(np.float32) / 255.0
        b = nxt.astype(np.float32) / 255.0
        u, v = horn_schunck_batch(a, b, _NumpyOps, **params)
        return np.stack([u, v], axis=-1).astype(np.float32)
    if backend == "torch":
        import torch

        with torch.no_grad():
            a = torch.from_numpy(prev).to(device or "cpu").float() / 255.0
            b = torch.from_numpy(nxt).to(device or "cpu").float() / 255.0
            if compiled is None:
                compiled = compiles_by_default(a.device)
            u, v = horn_schunck_batch(a, b, _TorchOps, compiled=compiled, **params)
            return to_host(torch.stack([u, v], dim=-1))
    raise ValueError(f"unknown Horn-Schunck backend {backend!r}")


# --- pairs, images, stage driver ----------------------------------------------------------

def segment_pairs(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct consecutive frame pairs of all segments, and each segment's pair indices.

    Returns ``pairs`` (P x 2, sorted) and ``index`` (S x (L - 1)) with
    ``pairs[index[s, t]] == (segments[s, t], segments[s, t + 1])``.
    """
    all_pairs = np.stack([segments[:, :-1], segments[:, 1:]], axis=-1).reshape(-1, 2)
    pairs, inverse = np.unique(all_pairs, axis=0, return_inverse=True)
    return pairs.astype(np.int32), inverse.reshape(segments.shape[0], -1).astype(np.int32)


def with_consecutive(pairs: np.ndarray, n_frames: int) -> np.ndarray:
    """``pairs`` plus every (t, t + 1) of the video, distinct and sorted."""
    consecutive = np.stack([np.arange(n_frames - 1), np.arange(1, n_frames)], axis=1)
    return np.unique(np.concatenate([pairs, consecutive]), axis=0).astype(np.int32)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (T x H x W x 3) to grayscale (T x H x W)."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def compute_pairs(gray: np.ndarray, pairs: np.ndarray, fn: FlowFn,
                  threads: int = 1) -> np.ndarray:
    """Flow of each pair with a per-pair function, spread over ``threads`` (OpenCV releases
    the GIL); identical indices give zeros uncomputed."""
    out = np.zeros((len(pairs),) + gray.shape[1:] + (2,), np.float32)
    todo = np.flatnonzero(pairs[:, 0] != pairs[:, 1])

    def one(k):
        a, b = pairs[k]
        out[k] = fn(gray[a], gray[b])

    if threads > 1 and len(todo) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, todo))
    else:
        for k in todo:
            one(k)
    return out


def compute_flows(gray: np.ndarray, pairs: np.ndarray, name: str, params: Mapping,
                  threads: int = 1, batch: int | None = None,
                  device: str = "auto") -> np.ndarray:
    """Flow (P x H x W x 2 float32, pixels) of each pair with method ``name``; ``params`` may
    name a ``backend``, resolved on ``device`` (backend_of). The batched solvers take ``batch``
    pairs per call (default: pairs_per_batch)."""
    if name not in METHODS:
        raise ValueError(f"unknown flow method {name!r}; choose from {METHODS}")
    backend, device = backend_of(name, params, device)
    params = {k: v for k, v in params.items() if k != "backend"}
    if name == "farneback":
        return compute_pairs(gray, pairs, lambda a, b: farneback(a, b, **params), threads)
    if backend == "opencv":
        local = threading.local()

        def opencv_tvl1(a, b):
            if not hasattr(local, "solver"):  # a solver object is not thread-safe
                local.solver = tvl1_solver(**params)
            return local.solver.calc(a, b, None)

        return compute_pairs(gray, pairs, opencv_tvl1, threads)
    if name == "tvl1":
        from vfer.tvl1 import tvl1

        solve = lambda a, b: tvl1(a, b, device=device, **params)  # noqa: E731
    else:
        solve = lambda a, b: horn_schunck(a, b, backend, device, **params)  # noqa: E731
    batch = batch or pairs_per_batch(name, backend, device, gray.shape[1:])
    out = np.zeros((len(pairs),) + gray.shape[1:] + (2,), np.float32)
    for k in equal_calls(np.flatnonzero(pairs[:, 0] != pairs[:, 1]), batch):
        out[k] = solve(gray[pairs[k, 0]], gray[pairs[k, 1]])
    return out


def equal_calls(items: np.ndarray, batch: int) -> list[np.ndarray]:
    """``items`` in the fewest calls of at most ``batch``, equal in size (to one item)."""
    return np.array_split(items, -(-len(items) // batch)) if len(items) else []


#: Peak bytes per pixel of a pair in the batched torch solvers (images, flow, every temporary),
#: measured on the CPU with peak RSS over batches of 16 to 128 pairs at 112 x 112 (TV-L1 ~280,
#: Horn-Schunck ~230), rounded up.
BYTES_PER_PIXEL = {"tvl1": 320, "horn_schunck": 256}
#: Pixels per call on the host (the numpy and torch-on-CPU backends): the solvers' arrays then
#: stay in the caches. Best of 3, pairs/s on one core of a 2-core AMD EPYC (1 MiB L2, 32 MiB
#: L3), at 112 x 112 and 227 x 227, against 64 pairs per call: Horn-Schunck numpy (2^17
#: pixels) 62 vs 48 and 15.3 vs 9.4, torch (2^18) 94 vs 86 and 24.5 vs 16.3; TV-L1 torch
#: 12.7 vs 10.5 at 112 x 112.
CPU_PIXELS = {"numpy": 1 << 17, "torch": 1 << 18}
#: The most pixels per call on CUDA: 2^25 (2,674 pairs of 112 x 112, 651 of 227 x 227) fill a
#: large GPU while the flows of a call (8 bytes per pixel, 256 MiB) and of the call being
#: written stay small in host memory.
MAX_PIXELS = 1 << 25


def pairs_per_batch(name: str, backend: str, device: str | None,
                    shape: tuple[int, int]) -> int:
    """Pairs per call of a batched solver (``backend`` numpy or torch): CPU_PIXELS[backend]
    pixels on the host; on CUDA as many as fit in half of the free device memory, at most
    MAX_PIXELS pixels."""
    pixels = int(np.prod(shape))
    if device is None or not str(device).startswith("cuda"):
        return max(1, CPU_PIXELS[backend] // pixels)
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(free // 2 // (BYTES_PER_PIXEL[name] * pixels), MAX_PIXELS // pixels))


def resolve_backend(backend: str, cpu: str = "numpy",
                    device: str = "auto") -> tuple[str, str | None]:
    """(backend, torch device): ``auto`` -> torch on CUDA when present, else the CPU backend
    ``cpu`` (numpy for Horn-Schunck, opencv for TV-L1); ``torch`` -> on CUDA when present,
    else on the CPU. ``device`` is the config's (vfer.runtime.select_device): ``cpu`` keeps
    both on the CPU, ``cuda`` requires CUDA for both. Imports torch for the torch backends, so
    that a job's ``set_threads`` afterwards limits its threads."""
    if backend == cpu:
        return backend, None
    if backend not in ("auto", "torch"):
        raise ValueError(f"unknown flow backend {backend!r}; choose from auto, {cpu}, torch")
    if backend == "auto" and device == "cpu":
        return cpu, None
    from vfer.runtime import select_device

    cuda = select_device(device).type == "cuda"
    if backend == "auto":
        return ("torch", "cuda") if cuda else (cpu, None)
    return "torch", "cuda" if cuda else "cpu"


#: The methods with a torch backend, and their CPU implementation (``backend`` key).
CPU_BACKENDS = {"tvl1": "opencv", "horn_schunck": "numpy"}


def backend_of(name: str, params: Mapping, device: str = "auto") -> tuple[str, str | None]:
    """(backend, torch device or None) that computes method ``name`` with ``params`` on the
    config's ``device``: its ``backend`` key resolved (resolve_backend); without the key, the
    CPU implementation."""
    if name not in CPU_BACKENDS:
        return "opencv", None
    cpu = CPU_BACKENDS[name]
    return resolve_backend(params.get("backend", cpu), cpu, device)


def uses_gpu(name: str, params: Mapping, device: str = "auto") -> bool:
    """Whether method ``name`` with ``params`` computes on CUDA wherever CUDA is present: what
    the flow rule declares as ``gpu=1``, without looking for CUDA on the machine that plans."""
    return name in CPU_BACKENDS and device != "cpu" and params.get("backend") in ("auto", "torch")


def flow_to_hsv_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow field (H x W x 2): hue = direction, brightness = magnitude."""
    mag, ang = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    top = max_magnitude or max(float(mag.max()), 1e-6)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang * (90.0 / np.pi)).astype(np.uint8)  # OpenCV hue is 0..180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / top * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def video_pairs(segments: np.ndarray, n_frames: int,
                consecutive: bool) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, index) of a video as segment_pairs; with ``consecutive`` every (t, t + 1) pair
    of its ``n_frames`` frames is added and ``index`` points into the extended pairs."""
    pairs, index = segment_pairs(segments)
    if not consecutive:
        return pairs, index
    wanted = with_consecutive(pairs, n_frames)
    code = wanted[:, 0] * n_frames + wanted[:, 1]
    index = np.searchsorted(code, pairs[index][..., 0] * n_frames
                            + pairs[index][..., 1]).astype(np.int32)
    return wanted, index


def group_videos(counts: list[int], batch: int) -> list[list[int]]:
    """Consecutive runs of videos (their positions) of at most ``batch`` pairs in all, or of
    one video where a video alone has more."""
    groups, total = [], 0
    for k, n in enumerate(counts):
        if groups and total + n <= batch:
            groups[-1].append(k)
            total += n
        else:
            groups.append([k])
            total = n
    return groups


class NoFlowError(ValueError):
    """A flow shard in which every computed frame pair has exactly zero flow."""


def _no_flow_reason(out_path: str, name: str, params: dict, computed: int, differing: int,
                    faces_path: str) -> str:
    """Why a shard whose computed flows are all zero is refused, and what to check."""
    head = (f"{out_path}: all {computed} frame pairs computed with flow method {name} "
            f"{params} have exactly zero flow; ")
    if differing:
        return head + (f"{differing} of them join different frames, so these parameters make "
                       f"no flow: check flow.{name} in the config (docs/methods.md)")
    return head + (f"their two frames are identical (still videos, or one face crop repeated): "
                   f"check the videos and the contact sheet of {faces_path}")


def _pair_counts(gray: np.ndarray, pairs: np.ndarray, flows: np.ndarray) -> tuple[int, int, bool]:
    """Computed (non-padding) pairs, those joining different frames, and whether any flow
    of them is non-zero."""
    moving = np.flatnonzero(pairs[:, 0] != pairs[:, 1])
    differing = sum(not np.array_equal(gray[a], gray[b]) for a, b in pairs[moving])
    return len(moving), int(differing), bool(np.any(flows[moving]))


def process_shard(faces_path: str, segments_path: str, out_path: str, name: str, params: dict,
                  bound: float, consecutive: bool, provenance: dict, threads: int = 1,
                  store_raw: bool = False, device: str = "auto") -> None:
    """Flow images of every distinct frame pair of every video in a shard (vfer.store.FlowFile).

    With ``consecutive`` every (t, t + 1) pair of the video is computed as well (ordered flow
    maps need the whole sequence). The torch backends compute the pairs of consecutive videos
    together, up to pairs_per_batch of them (OpenCV and numpy: one video at a time). The next
    videos' flows are computed while the current ones are written. ``device`` is the config's
    (backend_of); the ``backend`` attr records [backend, torch device or null]. A shard whose
    computed pairs all have exactly zero flow raises NoFlowError (and leaves no file): its flow
    images would carry no motion.
    """
    from vfer.runtime import progress, set_threads
    from vfer.store import FacesFile, FlowFile, SegmentsFile

    backend, torch_device = backend_of(name, params, device)
    with FacesFile(faces_path) as faces, SegmentsFile(segments_path) as segs, \
            FlowFile.create(out_path, {"method": name, "params": params, "bound": bound,
                                       "consecutive": consecutive, "store_raw": store_raw,
                                       "backend": [backend, torch_device], **provenance}) as dst, \
            ThreadPoolExecutor(1) as prefetch:

        def compute(group: list[str]) -> list[tuple]:
            set_threads(threads, opencv=1)  # OpenMP (torch) thread settings are per thread
            grays, parts = [], []
            for video_id in group:
                gray = to_gray(faces.frames(video_id))
                grays.append(gray)
                parts.append(video_pairs(segs.segment_index(video_id), len(gray), consecutive))
            offsets = np.cumsum([0] + [len(g) for g in grays[:-1]])
            flows = compute_flows(np.concatenate(grays),
                                  np.concatenate([p + o for (p, _), o in zip(parts, offsets)]),
                                  name, params, threads, device=device)
            ends = np.cumsum([len(p) for p, _ in parts])[:-1]
            return [(v, p, i, f, _pair_counts(g, p, f))
                    for v, g, (p, i), f in zip(group, grays, parts, np.split(flows, ends))]

        ids = segs.videos()
        groups = [[v] for v in ids]
        if backend == "torch" and ids:
            counts = [len(segment_pairs(segs.segment_index(v))[0]) for v in ids]
            shape = faces.frame_shape(ids[0])
            batch = pairs_per_batch(name, backend, torch_device, shape)
            groups = [[ids[k] for k in g] for g in group_videos(counts, batch)]
        pending = prefetch.submit(compute, groups[0]) if groups else None
        computed = differing = clipped = vectors = 0
        moved = False
        for k, _ in enumerate(progress(groups, "flow")):
            done = pending.result()
            if k + 1 < len(groups):
                pending = prefetch.submit(compute, groups[k + 1])
            for video_id, pairs, index, flows, counts in done:
                dst.write_video(video_id, pairs, flows, index, store_raw)
                computed, differing, moved = (computed + counts[0], differing + counts[1],
                                              moved or counts[2])
                clipped += int(np.count_nonzero((np.abs(flows) > bound).any(-1)))
                vectors += flows.size // 2
        if computed and not moved:
            raise NoFlowError(_no_flow_reason(out_path, name, params, computed, differing,
                                              faces_path))
        share = clipped / max(vectors, 1)
        dst.set_attrs({"clipped_share": share})
        if share > CLIPPED_WARNING:
            log.warning("%s: %.1f%% of the flow vectors exceed the bound of %g px and are "
                        "clipped in the flow images (raise flow.bound; store_raw keeps the "
                        "flows unclipped)", out_path, 100 * share, bound)
