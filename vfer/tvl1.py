"""TV-L1 optical flow in torch, batched over image pairs, following OpenCV's DualTVL1OpticalFlow.

The duality-based TV-L1 of Zach, Pock and Bischof (2007) with Wedel et al.'s (2009) median
filtering, written step for step after opencv_contrib's ``optflow/src/tvl1flow.cpp`` (with
``gamma=0`` and ``use_initial_flow=False``) so that its flows agree with OpenCV's:

- images in OpenCV's 0..255 intensity scale; a pyramid of ``nscales`` levels, each the previous
  one resized by ``scale_step`` (``cv::resize``, INTER_LINEAR, no blur), stopping before a level
  narrower or lower than 16 pixels; zero flow at the coarsest level; between levels the flow is
  resized (INTER_LINEAR) to the finer size and multiplied by ``1 / scale_step``;
- per level, the dual variables start at zero; ``warps`` times: the second image and its centred
  differences are warped by the flow (``cv::remap``, INTER_CUBIC, coordinates rounded to 1/32
  pixel, zero outside the image), then up to ``outer_iterations`` times a median filter of the
  flow (``median_filtering > 1``) followed by up to ``inner_iterations`` iterations of the
  thresholding step, the primal update ``u = v + theta div p`` and the dual update
  ``p = (p + tau/theta grad u) / (1 + tau/theta |grad u|)``; both loops of a warp stop once the
  sum of squared flow changes of an iteration is no more than ``epsilon^2 H W``.

Batching: each pair keeps its own stopping test, as if computed alone: a pair that stops keeps
its values exactly (masked updates) while the others go on, and the stopped pairs leave the
working batch (their variables are written back) once they are a quarter of it (on the CPU: at
once). The host reads how many pairs still iterate every 4 iterations on CUDA (every iteration
on the CPU) to end the loop or shrink the batch; on CUDA that count is copied back without
waiting and read at the next check, so that the device's queue never runs empty at a check
(the pairs' own stopping is decided on the device, so reading late changes no flow).

Fusion: on CUDA (where Triton can build its kernels, runtime.triton_can_build) the warp, the
median filter and the iteration each run as one torch.compile'd function (dynamic shapes: one
compilation for every batch size and pyramid level, ~20-60 s once per process, less from
torch's on-disk cache): an iteration then reads and writes each variable once instead of ~30
separate operations' temporaries. Compiled and not, the operations and their order are the
same.

Deviations from OpenCV, at float rounding level: OpenCV builds with Intel IPP (the x86 wheels)
resize float images in IPP, which rounds differently from OpenCV's own code reproduced here (so
the pyramid and the flow upsampling differ in the last bits); the error of the stopping test is
summed in float32 (OpenCV: double); the thresholding step is written ``clamp(-rho / max(|grad
I|^2, FLT_EPSILON), -lambda theta, lambda theta) grad I``, which differs only where |grad I|^2 <=
FLT_EPSILON and |rho| <= lambda theta |grad I|^2 (OpenCV keeps v = u; here v moves < 2e-5 px);
any odd median size is accepted (cv::medianBlur takes 3 or 5 on float images). At one scale
(no resize) the flows are OpenCV's to the bit in our tests; at five, with IPP off, to < 1e-4 px
mean EPE on most demo pairs. Last-bit differences are amplified at some pixels by the
discontinuous steps (coordinates rounded to 1/32 pixel, the stopping test): with IPP on, the
mean EPE between OpenCV's flow and this one is ~0.01-0.02 px on 112 x 112 demo face pairs.
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import torch
import torch.nn.functional as F

from vfer.runtime import compiles_by_default, to_host

_FLT_EPSILON = float(np.finfo(np.float32).eps)
_TAB = 32  # OpenCV's remap rounds coordinates to 1/INTER_TAB_SIZE pixel


def _linear_taps(n_in: int, n_out: int, scale: float, device):
    """Source indices and weights of OpenCV's INTER_LINEAR resize along one axis: source
    coordinate (d + 0.5) * scale - 0.5, clamped to the image (replicated border)."""
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    left = pos.floor()
    frac = pos - left
    frac[(left < 0) | (left >= n_in - 1)] = 0
    left = left.clamp(0, n_in - 1).long()
    return (left.to(device), (left + 1).clamp(max=n_in - 1).to(device),
            (1 - frac).to(device), frac.to(device))


def _resize(x: torch.Tensor, size: tuple[int, int], scale: float | None = None) -> torch.Tensor:
    """Bilinear resize of (..., h, w) to ``size`` as cv::resize(INTER_LINEAR), rows then
    columns: with ``scale`` (the factor given to cv::resize as fx = fy) or the ratio of sizes."""
    (h, w), (oh, ow) = x.shape[-2:], size
    i0, i1, w0, w1 = _linear_taps(w, ow, 1 / scale if scale else w / ow, x.device)
    x = x[..., i0] * w0 + x[..., i1] * w1
    i0, i1, w0, w1 = _linear_taps(h, oh, 1 / scale if scale else h / oh, x.device)
    return x[..., i0, :] * w0[:, None] + x[..., i1, :] * w1[:, None]


def _centered_gradient(x: torch.Tensor) -> torch.Tensor:
    """Centred differences of (B, 1, H, W) images, one-sided halves at the border: (B, 2, H, W)."""
    pad = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return torch.cat([0.5 * (pad[..., 1:-1, 2:] - pad[..., 1:-1, :-2]),
                      0.5 * (pad[..., 2:, 1:-1] - pad[..., :-2, 1:-1])], 1)


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """OpenCV's bicubic interpolation weights (A = -0.75) for fractions t of a pixel."""
    a = -0.75
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return [w0, w1, w2, 1 - w0 - w1 - w2]


def _remap_cubic(img: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """img (B, C, H, W) sampled at (x + u[:, 0], y + u[:, 1]) as cv::remap(INTER_CUBIC,
    BORDER_CONSTANT 0): coordinates rounded to 1/32 pixel, zero outside the image."""
    b, c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=img.dtype),
                            torch.arange(w, device=img.device, dtype=img.dtype), indexing="ij")
    qx = torch.round((xs + u[:, 0]) * _TAB).long()
    qy = torch.round((ys + u[:, 1]) * _TAB).long()
    wx = _cubic_weights((qx % _TAB).to(img.dtype) / _TAB)
    wy = _cubic_weights((qy % _TAB).to(img.dtype) / _TAB)
    x0 = torch.div(qx, _TAB, rounding_mode="floor") - 1  # first of the 4 x 4 taps
    y0 = torch.div(qy, _TAB, rounding_mode="floor") - 1
    flat = F.pad(img, (1, 1, 1, 1)).reshape(b, c, -1)  # one zero pixel around; clamp into it
    inside, border = 0, 0  # OpenCV adds rows of 4 taps inside the image, taps one by one else
    for i in range(4):
        row_idx = ((y0 + i).clamp(-1, h) + 1) * (w + 2)
        row = 0
        for j in range(4):
            idx = (row_idx + (x0 + j).clamp(-1, w) + 1).reshape(b, 1, -1).expand(b, c, -1)
            tap = flat.gather(2, idx).view(b, c, h, w) * (wy[i] * wx[j]).unsqueeze(1)
            row, border = row + tap, border + tap
        inside = inside + row
    fully_inside = ((x0 >= 0) & (x0 < w - 3) & (y0 >= 0) & (y0 < h - 3)).unsqueeze(1)
    return torch.where(fully_inside, inside, border)


@functools.lru_cache
def _median_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchanges (i, j) that leave the median of n values at index n // 2: Batcher's
    odd-even merge sort for n inputs, less those that cannot reach that index."""
    pairs, p = [], 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, kept = {n // 2}, []
    for i, j in reversed(pairs):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    return kept[::-1]


def _median_where(u: torch.Tensor, k: int, network: list[tuple[int, int]],
                  active: torch.Tensor) -> None:
    """k x k median filter (replicated border, as cv::medianBlur), in place, of the flows u
    (B, C, H, W) of the pairs still ``active`` (B,): the compare-exchanges ``network``
    (_median_network(k * k)) over the k * k shifted images, several times faster than
    torch.median on a CPU."""
    r, (h, w) = k // 2, u.shape[-2:]
    pad = F.pad(u, (r, r, r, r), mode="replicate")
    v = [pad[..., i:i + h, j:j + w] for i in range(k) for j in range(k)]
    for i, j in network:
        v[i], v[j] = torch.minimum(v[i], v[j]), torch.maximum(v[i], v[j])
    u.copy_(torch.where(active[:, None, None, None], v[k * k // 2], u))


def _warp_terms(target: torch.Tensor, u: torch.Tensor, i0: torch.Tensor):
    """The data term of one warp (OpenCV's remap and calcGradRho): the second image and its
    gradient ``target`` (B, 3, H, W) warped by the flow u; returns the warped gradient
    (B, 2, H, W), the constant part of the residual rho and |grad I|^2 clamped to FLT_EPSILON."""
    warped = _remap_cubic(target, u)
    ix, iy = warped[:, 1:2], warped[:, 2:]
    grad = ix * ix + iy * iy
    rho_c = warped[:, :1] - ix * u[:, :1] - iy * u[:, 1:] - i0
    return warped[:, 1:].contiguous(), rho_c, grad.clamp(min=_FLT_EPSILON)


def _step(u, px, py, ixy, rho_c, grad, active, ux, uy, l_t, theta, taut, stop) -> None:
    """One iteration, in place on the flow u and the dual variables px, py (OpenCV's estimateV,
    estimateU, estimateDualVariables, same operations in the same order) of the pairs still
    ``active`` (B,) bool, which stay so while their sum of squared flow changes exceeds ``stop``;
    the other pairs keep their values exactly. ux, uy: buffers with a zero last column / row."""
    live = active[:, None, None, None]
    # thresholding: v = u + clamp(-rho / |grad I|^2, -lambda theta, lambda theta) grad I
    rho = ixy[:, :1] * u[:, :1]
    rho += ixy[:, 1:] * u[:, 1:]
    rho += rho_c
    v = ixy * rho.div_(grad).neg_().clamp_(-l_t, l_t)
    v += u
    # primal update u = v + theta div p; backward differences, p = 0 before the first row/column
    div = px.clone()
    div[..., 1:] -= px[..., :-1]
    div_y = py.clone()
    div_y[..., 1:, :] -= py[..., :-1, :]
    div += div_y
    div[..., 1:, 0] = (px[..., 1:, 0] + py[..., 1:, 0]) - py[..., :-1, 0]  # OpenCV's order
    v += div.mul_(theta)
    err = (v - u).square_().sum((1, 2, 3))
    u.copy_(torch.where(live, v, u))
    # dual update p = (p + tau/theta grad u) / (1 + tau/theta |grad u|), forward differences;
    # tau/theta is 0 for the pairs that stopped (p + 0) / 1 = p
    taut = live * taut
    ux[..., :-1] = u[..., 1:] - u[..., :-1]
    uy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    norm = torch.hypot(ux, uy).mul_(taut).add_(1)
    px.add_(ux.mul_(taut)).div_(norm)
    py.add_(uy.mul_(taut)).div_(norm)
    active.logical_and_(err > stop)


#: Per device type: iterations between checks of how many pairs still iterate; the share of the
#: working batch still iterating under which the stopped pairs leave it (a copy of the working
#: batch); and by how many checks the host's reading of the count lags (0: the host waits for
#: the device at each check; 1: it reads the previous check's count, copied back meanwhile).
#: On the CPU a check costs nothing and a stopped pair costs its full compute until it leaves.
_SCHEDULE = {"cpu": (1, 1.0, 0), "cuda": (4, 0.75, 1)}


def _active_count(active: torch.Tensor):
    """A function that returns how many of ``active`` are true: on CUDA the count is copied to
    page-locked memory without waiting, and the function waits only for that copy."""
    if active.device.type != "cuda":
        n = int(active.sum())
        return lambda: n
    host = torch.empty((), dtype=torch.int64, pin_memory=True)
    host.copy_(active.sum(), non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()

    def read() -> int:
        copied.synchronize()
        return int(host)
    return read


@functools.lru_cache
def _kernels(compiled: bool) -> tuple:
    """The warp, median and iteration functions; ``compiled``: each fused by torch.compile
    (dynamic shapes: one compilation serves every batch size and pyramid level)."""
    kernels = (_warp_terms, _median_where, _step)
    if compiled:
        kernels = tuple(torch.compile(k, dynamic=True) for k in kernels)
    return kernels


def _one_scale(i0, i1, u, tau, lambda_, theta, warps, epsilon, inner_iterations,
               outer_iterations, median_filtering, compiled):
    """TV-L1 at one pyramid level (OpenCV's procOneScale). i0, i1: (B, 1, H, W); u: (B, 2, H, W)
    initial flow; returns the flow."""
    b, _, h, w = i0.shape
    warp_terms, median, step = _kernels(compiled)
    every, share, lag = _SCHEDULE.get(u.device.type, _SCHEDULE["cuda"])
    network = _median_network(median_filtering * median_filtering)
    stop = float(np.float32(epsilon * epsilon * h * w))
    l_t, taut = float(np.float32(lambda_ * theta)), float(np.float32(tau / theta))
    u, px, py = u.clone(), torch.zeros_like(u), torch.zeros_like(u)
    target = torch.cat([i1, _centered_gradient(i1)], 1)  # I1, I1x, I1y
    for _ in range(warps):
        # the working batch: u, px, py and the data terms of the pairs in idx (at first all:
        # u, px, py themselves), written back when pairs leave it and at the end of the warp
        idx, work = None, [u, px, py, *warp_terms(target, u, i0)]
        active = torch.ones(b, dtype=torch.bool, device=u.device)
        buffers = [torch.zeros_like(u), torch.zeros_like(u)]
        counts = collections.deque()  # of checks not yet read (_active_count)
        for it in range(outer_iterations * inner_iterations):
            if it % inner_iterations == 0 and median_filtering > 1:
                median(work[0], median_filtering, network, active)
            step(*work, active, *buffers, l_t, theta, taut, stop)
            if (it + 1) % every:
                continue
            counts.append(_active_count(active))
            if len(counts) <= lag:
                continue
            left = counts.popleft()()  # pairs iterating ``lag`` checks ago, at least as many
            if not left:  # as now; none: the iterations since changed nothing
                break
            if left < share * len(active):
                if idx is not None:
                    u[idx], px[idx], py[idx] = work[:3]
                keep = active.nonzero()[:, 0]  # a host sync on CUDA
                if not len(keep):
                    break
                idx = keep if idx is None else idx[keep]
                work, active = [t[keep] for t in work], active[keep]
                buffers = [torch.zeros_like(work[0]), torch.zeros_like(work[0])]
                counts.clear()  # counts of the batch before
        if idx is not None:
            u[idx], px[idx], py[idx] = work[:3]
    return u


def tvl1_batch(prev: torch.Tensor, nxt: torch.Tensor, tau: float = 0.25, lambda_: float = 0.15,
               theta: float = 0.3, nscales: int = 5, warps: int = 5, epsilon: float = 0.01,
               inner_iterations: int = 30, outer_iterations: int = 10, scale_step: float = 0.8,
               median_filtering: int = 5, compiled: bool | None = None) -> torch.Tensor:
    """Flows from ``prev`` to ``nxt``, float32 tensors (B, H, W) in OpenCV's intensity scale
    (0..255), on their device; returns (B, 2, H, W) float32 in pixels (channel 0: x, 1: y),
    so that prev(x, y) ~ nxt(x + u_x, y + u_y) like OpenCV's flow. ``compiled``: the warp,
    median and iteration steps fused by torch.compile; by default on CUDA where Triton can
    build its kernels (runtime.compiles_by_default)."""
    if prev.ndim != 3 or prev.shape != nxt.shape:
        raise ValueError(f"expected two (B, H, W) tensors of one shape, got {tuple(prev.shape)} "
                         f"and {tuple(nxt.shape)}")
    even_median = median_filtering > 1 and median_filtering % 2 == 0
    if nscales < 1 or not 0 < scale_step <= 1 or even_median:
        raise ValueError("expected nscales >= 1, 0 < scale_step <= 1 and an odd median_filtering "
                         "(<= 1: none)")
    if not len(prev):
        return prev.new_zeros((0, 2) + tuple(prev.shape[1:]))
    if compiled is None:
        compiled = compiles_by_default(prev.device)
    pyramid = [torch.stack([prev, nxt], 1).float()]
    for _ in range(1, nscales):
        h, w = pyramid[-1].shape[-2:]
        size = (round(h * scale_step), round(w * scale_step))
        if min(size) < 16:
            break
        pyramid.append(_resize(pyramid[-1], size, scale_step))
    b, _, h, w = pyramid[-1].shape
    u = pyramid[-1].new_zeros(b, 2, h, w)
    for s in range(len(pyramid) - 1, -1, -1):
        if s < len(pyramid) - 1:
            u = _resize(u, tuple(pyramid[s].shape[-2:])) * float(np.float32(1 / scale_step))
        u = _one_scale(pyramid[s][:, :1], pyramid[s][:, 1:], u, tau, lambda_, theta, warps,
                       epsilon, inner_iterations, outer_iterations, median_filtering, compiled)
    return u


def tvl1(prev, nxt, tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
         inner_iterations=30, outer_iterations=10, scale_step=0.8, median_filtering=5,
         device=None, compiled=None) -> np.ndarray:
    """prev, nxt: uint8 grayscale batches (B, H, W) (numpy); returns flows (B, H, W, 2) float32
    in pixels, as cv2.optflow.DualTVL1OpticalFlow would per pair. ``device``: a torch device,
    by default CUDA when available, else the CPU; ``compiled``: as in ``tvl1_batch``."""
    prev, nxt = np.asarray(prev), np.asarray(nxt)
    if prev.dtype != np.uint8 or nxt.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {prev.dtype} and {nxt.dtype}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device).float()  # noqa: E731
    flow = tvl1_batch(to(prev), to(nxt), tau=tau, lambda_=lambda_, theta=theta, nscales=nscales,
                      warps=warps, epsilon=epsilon, inner_iterations=inner_iterations,
                      outer_iterations=outer_iterations, scale_step=scale_step,
                      median_filtering=median_filtering, compiled=compiled)
    return to_host(flow.permute(0, 2, 3, 1))
