"""Dynamic images: rank pooling of a sequence of frames (RGB) or of flow fields (docs/methods.md).

* ``approximate`` (Bilen et al.): d = sum_t alpha_t x_t with
  alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}), H_t the t-th harmonic number (H_0 = 0).
* ``rank_svm`` (Fernando et al., VideoDarwin): the smoothed sequence m_t, the map
  x -> [sqrt(x+), sqrt(x-)], L2 normalisation, then an L2-regularised L2-loss linear SVR on the
  targets t = 1..T (liblinear -s 11, C = 1, epsilon 0.1, solved in its dual on the T x T Gram
  matrix); the weights for the positive minus those for the negative part, reshaped to the
  frame, are the image.
* ``rank_pairwise`` (Ren, eq. 6): a pairwise RankSVM on the smoothed sequence itself,
  min_u sum_{i<j} max(0, 1 - u'(m_j - m_i)) + |u|^2 / 2C, solved exactly in its dual on the
  Gram matrix of the pair differences; u, reshaped to the frame, is the image.

Smoothing (``smoothing``): ``tvm``, the time-varying mean m_t = mean(x_1..x_t) (VideoDarwin), or
``lwma``, the linearly weighted moving average m_t = sum_{i<=t} i x_i / sum_{i<=t} i (Ren, eq. 3).
Rank pooling is fitted forward and on the reversed sequence.

Sequences are either each segment's frames (or its flows), or windows of ``window`` items
with stride ``window / 2`` over the whole video (Ren's ordered optical-flow maps: w = 28
consecutive flows, x and y jointly). Images are min-max scaled to [0, 255] over all their
channels (``scale: global``) or per channel (``per_channel``: Ren scales G_x and G_y apart).
"""

from __future__ import annotations

import itertools

import numpy as np

SOURCES = ("rgb", "flow")
METHODS = ("approximate", "rank_svm", "rank_pairwise")


def rank_pool_coefficients(T: int) -> np.ndarray:
    """alpha_1..alpha_T of approximate rank pooling (they sum to zero)."""
    t = np.arange(1, T + 1, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # H_0 .. H_T
    return 2.0 * (T - t + 1) - (T + 1) * (harmonic[T] - harmonic[:-1])


def dynamic_image(frames: np.ndarray) -> np.ndarray:
    """Approximate dynamic image (float64, frame shape) of T frames along axis 0: sum_t
    alpha_t (x_t - x_1), equal to sum_t alpha_t x_t as the alphas sum to zero, but exactly
    zero for a still sequence (the alphas' rounded sum, ~1e-13, times a frame would be a
    faint negative of the frame, which min-max scaling stretches to full contrast)."""
    alpha = rank_pool_coefficients(len(frames))
    x = np.asarray(frames, np.float64)
    return np.tensordot(alpha, x - x[:1], axes=(0, 0))


def smooth(frames: np.ndarray, smoothing: str = "tvm") -> np.ndarray:
    """The smoothed sequence (T x D float64) of T frames: ``tvm`` or ``lwma``."""
    x = np.asarray(frames, np.float64).reshape(len(frames), -1)
    weights = np.ones(len(x)) if smoothing == "tvm" else np.arange(1, len(x) + 1, dtype=np.float64)
    if smoothing not in ("tvm", "lwma"):
        raise ValueError(f"unknown smoothing {smoothing!r}; choose from ['tvm', 'lwma']")
    return np.cumsum(weights[:, None] * x, axis=0) / np.cumsum(weights)[:, None]


def rank_features(frames: np.ndarray, smoothing: str = "tvm") -> np.ndarray:
    """What the rank SVR sees: the smoothed sequence, [sqrt(x+), sqrt(x-)], L2-normalised
    (T x 2D)."""
    m = smooth(frames, smoothing)
    v = np.concatenate([np.sqrt(np.maximum(m, 0.0)), np.sqrt(np.maximum(-m, 0.0))], axis=1)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def svr_dual(gram: np.ndarray, targets: np.ndarray, C: float = 1.0, epsilon: float = 0.1,
             tol: float = 1e-10, max_sweeps: int = 10000) -> np.ndarray:
    """Dual coefficients beta of the L2-regularised L2-loss SVR (liblinear's -s 12 dual of -s 11):

        min_beta 1/2 beta' (K + I / 2C) beta - y' beta + epsilon |beta|_1,   w = sum_i beta_i x_i

    solved by exact coordinate descent on the n x n Gram matrix K (n = sequence length, so
    this costs nothing next to forming K)."""
    q = gram + np.eye(len(gram)) / (2.0 * C)
    beta = np.zeros(len(gram))
    grad = -targets.astype(np.float64)  # q @ beta - y
    for _ in range(max_sweeps):
        largest = 0.0
        for i in range(len(beta)):
            a = beta[i] - grad[i] / q[i, i]
            new = np.sign(a) * max(abs(a) - epsilon / q[i, i], 0.0)
            step = new - beta[i]
            if step:
                grad += step * q[:, i]
                beta[i] = new
                largest = max(largest, abs(step))
        if largest < tol:
            break
    return beta


def rank_svm_weights(frames: np.ndarray, C: float = 1.0, epsilon: float = 0.1,
                     smoothing: str = "tvm") -> np.ndarray:
    """Weights u (2D) of the linear SVR (with a bias feature, as liblinear -B 1) that maps
    rank_features(frames)[t] to t = 1..T; the bias weight is dropped."""
    v = rank_features(frames, smoothing)
    gram = v @ v.T + 1.0  # the constant bias feature
    beta = svr_dual(gram, np.arange(1, len(v) + 1, dtype=np.float64), C, epsilon)
    return beta @ v


def rank_svm_image(frames: np.ndarray, C: float = 1.0, epsilon: float = 0.1,
                   reverse: bool = False, smoothing: str = "tvm") -> np.ndarray:
    """Rank-pooled image (float64, frame shape): positive-part minus negative-part weights."""
    seq = np.asarray(frames)[::-1] if reverse else np.asarray(frames)
    u = rank_svm_weights(seq, C, epsilon, smoothing)
    d = u.size // 2
    return (u[:d] - u[d:]).reshape(seq.shape[1:])


def pairwise_dual(gram: np.ndarray, C: float = 1.0, tol: float = 1e-10,
                  max_sweeps: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Dual of the pairwise RankSVM on T items with Gram matrix K: the pairs (i < j) and their
    coefficients alpha in [0, C], u = sum_p alpha_p (m_j - m_i). Exact coordinate descent on

        min_alpha 1/2 alpha' Q alpha - sum alpha,   Q_pq = (m_j - m_i)'(m_l - m_k),

    whose primal is min_u |u|^2 / 2 + C sum_{i<j} max(0, 1 - u'(m_j - m_i))."""
    pairs = np.array(list(itertools.combinations(range(len(gram)), 2)), np.int64).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    q = gram[np.ix_(j, j)] - gram[np.ix_(j, i)] - gram[np.ix_(i, j)] + gram[np.ix_(i, i)]
    alpha = np.zeros(len(pairs))
    grad = -np.ones(len(pairs))  # q @ alpha - 1
    for _ in range(max_sweeps):
        largest = 0.0
        for p in range(len(pairs)):
            if q[p, p] <= 0:
                continue
            new = min(max(alpha[p] - grad[p] / q[p, p], 0.0), C)
            step = new - alpha[p]
            if step:
                grad += step * q[:, p]
                alpha[p] = new
                largest = max(largest, abs(step))
        if largest < tol:
            break
    return pairs, alpha


def rank_pairwise_image(frames: np.ndarray, C: float = 1.0, reverse: bool = False,
                        smoothing: str = "lwma") -> np.ndarray:
    """Ordered map (float64, frame shape) of the pairwise RankSVM on the smoothed frames."""
    seq = np.asarray(frames)[::-1] if reverse else np.asarray(frames)
    m = smooth(seq, smoothing)
    if len(m) < 2:
        return np.zeros(seq.shape[1:])
    pairs, alpha = pairwise_dual(m @ m.T, C)
    u = (alpha[:, None] * (m[pairs[:, 1]] - m[pairs[:, 0]])).sum(axis=0)
    return u.reshape(seq.shape[1:])


def scaling(image: np.ndarray, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the min-max that maps an image to [0, 255]: over all of it, or per channel
    (then arrays of one value per channel, the image's last axis)."""
    axes = tuple(range(image.ndim - 1)) if per_channel else None
    return np.asarray(image.min(axis=axes), np.float64), np.asarray(image.max(axis=axes),
                                                                    np.float64)


def to_uint8(image: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Min-max to [0, 255] uint8, globally or per channel (a constant part maps to 128)."""
    lo, hi = scaling(image, per_channel)
    span = hi - lo
    flat = span < 1e-12
    scaled = (image - lo) * (255.0 / np.where(flat, 1.0, span))
    return np.where(flat, 128.0, np.round(scaled)).astype(np.uint8)


def zero_level(image: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Where the value 0 of ``image`` lies after ``to_uint8``, as a fraction of 255 (per
    channel: one value per channel)."""
    lo, hi = scaling(image, per_channel)
    span = hi - lo
    return np.where(span < 1e-12, 128 / 255.0, -lo / np.where(span < 1e-12, 1.0, span))


def flow_to_3ch(image: np.ndarray) -> np.ndarray:
    """A pooled flow field (H x W x 2) as (x, y, magnitude) for a 3-channel network."""
    return np.concatenate([image, np.sqrt((image ** 2).sum(-1, keepdims=True))], axis=-1)


def windows(n: int, window: int) -> np.ndarray:
    """Index windows of ``window`` items with stride window // 2 over n items (one window of
    all n when n <= window)."""
    if n <= window:
        return np.arange(n)[None, :]
    stride = max(1, window // 2)
    starts = np.arange(0, n - window + 1, stride)
    return starts[:, None] + np.arange(window)[None, :]


def pool(sequences: list[np.ndarray], method: str, C: float = 1.0, epsilon: float = 0.1,
         reverse: bool = False, smoothing: str = "tvm") -> list[np.ndarray]:
    """Pool each sequence (T x ...) into one float image with ``method``."""
    if method == "approximate":
        return [dynamic_image(s[::-1] if reverse else s) for s in sequences]
    if method == "rank_svm":
        return [rank_svm_image(s, C, epsilon, reverse, smoothing) for s in sequences]
    if method == "rank_pairwise":
        return [rank_pairwise_image(s, C, reverse, smoothing) for s in sequences]
    raise ValueError(f"unknown dynamic image method {method!r}; choose from {list(METHODS)}")


def nearest(centres: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the centre nearest to each target (the first of equals)."""
    return np.abs(targets[:, None] - centres[None, :]).argmin(axis=1)


def video_sequences(source: str, params: dict, video_id: str, faces, segments, flow):
    """The sequences to pool for one video, and the pooled image each segment uses (S x 1).

    Per segment (``window: null``): each segment's frames (or flows). Windows: ``window``
    consecutive frames (or flows (t, t + 1)) with stride window / 2 over the whole video;
    each segment uses the window whose centre is nearest to its own.
    """
    segment_index = segments.segment_index(video_id)
    per_segment = np.arange(len(segment_index))[:, None]
    if source == "rgb":
        frames = faces.frames(video_id)
        if not params["window"]:
            return [frames[s] for s in segment_index], per_segment
        spans = windows(len(frames), params["window"])
        centres = spans.mean(axis=1)
    else:
        flows, pairs = flow.flows(video_id), flow.pairs(video_id)
        if not params["window"]:
            return [flows[p] for p in flow.segment_pairs(video_id)], per_segment
        n = int(pairs.max()) + 1
        code = {(int(a), int(b)): k for k, (a, b) in enumerate(pairs)}
        if any((t, t + 1) not in code for t in range(n - 1)):
            raise ValueError(f"{video_id}: windows over flows need every consecutive pair: "
                             "set flow.consecutive: true")
        order = np.array([code[(t, t + 1)] for t in range(n - 1)])
        frames = flows[order]
        spans = windows(len(order), params["window"])
        centres = spans.mean(axis=1) + 0.5  # flow t lies between frames t and t + 1
    chosen = nearest(centres, segment_index.mean(axis=1))
    return [frames[w] for w in spans], chosen[:, None]


def process_shard(source: str, faces_path: str, segments_path: str, flow_path: str | None,
                  out_path: str, params: dict, provenance: dict) -> None:
    """Dynamic images (uint8) of every video in a shard (vfer.store.DynamicFile): forward and,
    for the rank SVMs, reversed; for flows, where zero flow lies in each image's x and y
    channels."""
    from contextlib import ExitStack

    from vfer.runtime import progress
    from vfer.store import DynamicFile, FacesFile, FlowFile, SegmentsFile

    if source not in SOURCES:
        raise ValueError(f"unknown dynamic image source {source!r}")
    with ExitStack() as stack:
        faces = stack.enter_context(FacesFile(faces_path))
        segs = stack.enter_context(SegmentsFile(segments_path))
        flow = stack.enter_context(FlowFile(flow_path)) if source == "flow" else None
        dst = stack.enter_context(DynamicFile.create(
            out_path, {"method": params["method"], "input": source, "params": params,
                       **provenance}))
        per_channel = params["scale"] == "per_channel"
        for video_id in progress(segs.videos(), f"dynamic {source}"):
            seqs, segment_images = video_sequences(source, params, video_id, faces, segs, flow)
            out = {}
            for reverse in ([False] if params["method"] == "approximate" else [False, True]):
                pooled = pool(seqs, params["method"], params["C"], params["epsilon"], reverse,
                              params["smoothing"])
                if source == "flow":
                    pooled = [flow_to_3ch(p) for p in pooled]
                out[reverse] = pooled
            zero = None
            if source == "flow":
                zero = np.array([np.broadcast_to(zero_level(p, per_channel), (3,))[:2]
                                 for p in out[False]], np.float32)
            images = {k: np.stack([to_uint8(p, per_channel) for p in v]) for k, v in out.items()}
            dst.write_video(video_id, images[False], segment_images, zero, images.get(True))
