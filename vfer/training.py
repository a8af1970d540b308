"""Training any network per fold, on that fold's training subjects only (docs/networks.md).

A sample is one segment of one training video: for every branch, its T time steps (or
``sample_steps`` of them, at the same positions in every branch). A ``val_fraction`` of the
training subjects is held out for early stopping (the best validation model is kept). One
random flip, rotation and crop per sample is applied identically to every branch and time
step; under a flip the x flow of flow inputs is negated about its zero level. Optimizers,
learning-rate schedules and initialisations are registered by name (vfer.nets.registry).
CUDA uses bfloat16 autocast; on the CPU the same seed gives the same model.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import math
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from vfer.folds import fold_rows
from vfer.inputs import InputSource
from vfer.io import atomic_path, sha256_of

log = logging.getLogger(__name__)

#: Input normalisation of image inputs (torchvision's ImageNet statistics).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


#: The fold number of a final model, trained on every subject (vfer.final).
FINAL = -1


class LeakageError(RuntimeError):
    """A model would be trained on a video of a subject its fold tests."""


# --- registered optimizers, schedules, initialisations -----------------------------------

class Optimizer:
    """Parameter updates written in torch's multi-tensor ops, the same updates as torch.optim's
    (L2 weight decay added to the gradient; tests/test_training.py compares them step by step).
    torch.optim's ``step`` imports torch._dynamo on its first call, which adds about 2 s to
    every training job on a CPU core; vfer never compiles its training loop. ``lr`` is set by
    the schedule before each step."""

    def __init__(self, params, cfg: dict):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay = cfg["lr"], cfg["weight_decay"]
        self.state: dict[int, dict] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient (state starts at their first)."""
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        for p in params:  # not setdefault: it would build a new state at every step
            if id(p) not in self.state:
                self.state[id(p)] = self.new_state(p)
        states = [self.state[id(p)] for p in params]
        self.update(params, grads, states)

    def new_state(self, p: torch.Tensor) -> dict:
        raise NotImplementedError

    def update(self, params: list, grads: list, states: list[dict]) -> None:
        raise NotImplementedError


class Adam(Optimizer):
    """Adam (Kingma and Ba) with betas (0.9, 0.999), eps 1e-8, bias-corrected per parameter."""

    BETAS, EPS = (0.9, 0.999), 1e-8

    def new_state(self, p: torch.Tensor) -> dict:
        return {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def update(self, params, grads, states) -> None:
        b1, b2 = self.BETAS
        m, v = [s["m"] for s in states], [s["v"] for s in states]
        for s in states:
            s["step"] += 1
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, [math.sqrt(1 - b2 ** s["step"]) for s in states])
        torch._foreach_add_(denom, self.EPS)
        torch._foreach_addcdiv_(params, m, denom,
                                [-self.lr / (1 - b1 ** s["step"]) for s in states])


class SGD(Optimizer):
    """Stochastic gradient descent with heavy-ball ``momentum`` (the buffer starts as the first
    gradient, as torch.optim.SGD's)."""

    def __init__(self, params, cfg: dict):
        super().__init__(params, cfg)
        self.momentum = cfg["momentum"]

    def new_state(self, p: torch.Tensor) -> dict:
        return {"buffer": torch.zeros_like(p) if self.momentum else None}

    def update(self, params, grads, states) -> None:
        if self.momentum:  # from zero, the first step's buffer is the gradient itself
            buffers = [s["buffer"] for s in states]
            torch._foreach_mul_(buffers, self.momentum)
            torch._foreach_add_(buffers, grads)
            grads = buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)


class Adadelta(Optimizer):
    """Adadelta (Zeiler) with rho = ``momentum`` (paper 001 calls it the attenuation
    coefficient) and eps 1e-6."""

    EPS = 1e-6

    def __init__(self, params, cfg: dict):
        super().__init__(params, cfg)
        self.rho = cfg["momentum"]

    def new_state(self, p: torch.Tensor) -> dict:
        return {"square": torch.zeros_like(p), "delta": torch.zeros_like(p)}

    def update(self, params, grads, states) -> None:
        rho = self.rho
        square, acc = [s["square"] for s in states], [s["delta"] for s in states]
        torch._foreach_mul_(square, rho)
        torch._foreach_addcmul_(square, grads, grads, 1 - rho)
        std = torch._foreach_add(square, self.EPS)
        torch._foreach_sqrt_(std)
        delta = torch._foreach_add(acc, self.EPS)
        torch._foreach_sqrt_(delta)
        torch._foreach_div_(delta, std)
        torch._foreach_mul_(delta, grads)
        torch._foreach_mul_(acc, rho)
        torch._foreach_addcmul_(acc, delta, delta, 1 - rho)
        torch._foreach_add_(params, delta, alpha=-self.lr)


def adam(params, cfg: dict) -> Optimizer:
    return Adam(params, cfg)


def sgd(params, cfg: dict) -> Optimizer:
    return SGD(params, cfg)


def adadelta(params, cfg: dict) -> Optimizer:
    return Adadelta(params, cfg)


def constant_schedule(cfg: dict):
    return lambda step: 1.0


def step_schedule(cfg: dict):
    every = cfg["step_size"] or max(1, cfg["steps"] // 3)
    return lambda step: cfg["gamma"] ** (step // every)


def cosine_schedule(cfg: dict):
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, cfg["steps"]) / cfg["steps"]))


def _layers(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]


def default_init(module: nn.Module) -> None:
    """torch's own initialisation (already applied at construction)."""


def xavier_init(module: nn.Module) -> None:
    for m in _layers(module):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def kaiming_init(module: nn.Module) -> None:
    for m in _layers(module):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --- samples -----------------------------------------------------------------------------

def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (..., h, w, 3) to size x size (area when shrinking)."""
    import cv2

    if images.shape[-3:-1] == (size, size):
        return np.ascontiguousarray(images)
    flat = images.reshape((-1,) + images.shape[-3:])
    shrink = flat.shape[1] > size
    out = np.stack([cv2.resize(im, (size, size),
                               interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
                    for im in flat]) if len(flat) else np.zeros((0, size, size, 3), np.uint8)
    return out.reshape(images.shape[:-3] + (size, size, 3))


class SampleSet:
    """(video, segment) samples of a network's branches with their labels.

    ``sources[branch]`` reads the branch's input; ``sizes[branch]`` is its image side (None
    for vector inputs). When the whole set fits in ``cache_mb``, each video's items are read
    once, resized and kept in one array per branch, and a batch is one gather from it (on the
    device after ``place``); otherwise each batch reads what it needs.
    """

    def __init__(self, sources: Mapping[str, InputSource], sizes: Mapping[str, int | None],
                 videos: list[str], labels: Mapping[str, int], cache_mb: float):
        twice = sorted(v for v, n in collections.Counter(videos).items() if n > 1)
        if twice:
            raise ValueError(f"video {twice[0]!r} is listed {videos.count(twice[0])} times "
                             "in one sample set")
        self.sources, self.sizes = dict(sources), dict(sizes)
        self.index = {b: {v: s.index(v) for v in videos} for b, s in self.sources.items()}
        counts = {v: {len(ix[v]) for ix in self.index.values()} for v in videos}
        for v, n in counts.items():
            if len(n) != 1:
                raise ValueError(f"{v}: the inputs disagree on the number of segments {sorted(n)}")
        self.items = [(v, s) for v in videos for s in range(next(iter(counts[v])))]
        self.labels = np.array([labels[v] for v, _ in self.items], np.int64)
        self.steps = {b: next(iter(ix.values())).shape[1] if ix else 1
                      for b, ix in self.index.items()}
        self._store: dict | None = None
        if not self.items:
            return
        unique = {b: {v: np.unique(ix[v], return_inverse=True) for v in videos}
                  for b, ix in self.index.items()}
        if self._bytes(unique) <= cache_mb * 2 ** 20:
            self._store = {b: self._load(b, unique[b]) for b in self.sources}

    def __len__(self) -> int:
        return len(self.items)

    def _bytes(self, unique: Mapping[str, Mapping[str, tuple]]) -> int:
        """Bytes of the distinct items of every branch (``unique``: per branch and video,
        np.unique of its index with the inverse)."""
        total = 0
        for b, per_video in unique.items():
            per = self.sizes[b] ** 2 * 3 if self.sizes[b] else self.sources[b].vector * 4
            total += per * sum(len(u) for u, _ in per_video.values())
        return total

    def _load(self, branch: str, unique: Mapping[str, tuple]):
        """(items of every video, one after the other; their zero levels or None; the row of
        each sample's time steps (samples x T)) of one branch, filled video by video."""
        source, size = self.sources[branch], self.sizes[branch]
        n = sum(len(u) for u, _ in unique.values())
        items = zeros = None
        rows, start = [], 0
        for v, (distinct, inverse) in unique.items():
            got, zero = source.items(v, distinct), source.zero(v, distinct)
            if size:
                got = resize(got, size)
            if items is None:  # shaped by the first video's items
                items = np.empty((n,) + got.shape[1:], got.dtype)
                zeros = None if zero is None else np.empty((n,) + zero.shape[1:], zero.dtype)
            items[start:start + len(got)] = got
            if zeros is not None:
                zeros[start:start + len(got)] = zero
            rows.append(start + inverse.reshape(self.index[branch][v].shape))
            start += len(got)
        return items, zeros, np.concatenate(rows)

    def store_bytes(self) -> int:
        """Bytes of the items and zero levels kept in memory (0 without a store)."""
        if self._store is None:
            return 0
        return sum(a.nbytes for items, zeros, _ in self._store.values()
                   for a in (items, zeros) if a is not None)

    def place(self, device: torch.device) -> None:
        """Keep the store on ``device``: batches are then gathered there, and nothing but
        sample indices crosses from the host."""
        if self._store is None:
            raise ValueError("only a set that fits in cache_mb can be placed on a device")
        self._store = {b: (_tensor(items).to(device),
                           None if zeros is None else _tensor(zeros).to(device), rows)
                       for b, (items, zeros, rows) in self._store.items()}

    def placed_on(self) -> torch.device | None:
        """The device the store was placed on; None for host arrays or no store."""
        if self._store is None:
            return None
        items = next(iter(self._store.values()))[0]
        return items.device if isinstance(items, torch.Tensor) else None

    def aligned_steps(self) -> int:
        """Time steps that every branch with more than one step has (L and L - 1 -> L - 1)."""
        longer = [t for t in self.steps.values() if t > 1]
        return min(longer) if longer else 1

    def batch(self, idx: np.ndarray, steps: np.ndarray | None = None):
        """({branch: items (B, T, ...)}, {branch: zero levels (B, T, 2) or None}, labels (B,)).

        ``steps`` (B x k positions < aligned_steps()) picks the same time steps in every branch
        with more than one step; None takes all. Items and zero levels are host arrays, or
        tensors on the device the store was placed on."""
        if self._store is None:
            inputs, zeros = {}, {}
            for b in self.sources:
                inputs[b], zeros[b] = self._read(b, idx, steps)
            return inputs, zeros, self.labels[idx]
        placed = self.placed_on()
        picks = {b: self._rows(b, idx, steps) for b in self.sources}
        if placed is not None:
            picks = {b: upload(pick, placed) for b, pick in picks.items()}
        return (*self._gather(picks), self.labels[idx])

    def gathered(self, draws: Iterator[tuple[np.ndarray, np.ndarray | None]],
                 chunk: int) -> Iterator[tuple]:
        """The batches of ``draws`` ((idx, steps) as ``batch`` takes them) from a store placed
        on a device, labels on the device too: the store's rows and the labels of ``chunk``
        batches at a time cross to the device in one copy, and a batch is then one gather per
        branch there."""
        device = self.placed_on()
        while True:
            drawn = list(itertools.islice(draws, chunk))
            if not drawn:
                return
            picks = [{b: self._rows(b, idx, steps) for b in self.sources} for idx, steps in drawn]
            shapes = {tuple(p.shape for p in pick.values()) for pick in picks}
            if len(shapes) > 1:
                raise ValueError(f"batches drawn together differ in shape: {sorted(shapes)}")
            flat = np.stack([np.concatenate([p.ravel() for p in pick.values()] + [self.labels[idx]])
                             for pick, (idx, _) in zip(picks, drawn)])
            sizes = [p.size for p in picks[0].values()] + [len(drawn[0][0])]
            for row in upload(flat, device):
                *parts, labels = row.split(sizes)
                yield (*self._gather({b: part.view(picks[0][b].shape)
                                      for b, part in zip(self.sources, parts)}), labels)

    def _rows(self, branch: str, idx: np.ndarray, steps: np.ndarray | None) -> np.ndarray:
        """The store's rows of a batch's items (B x T) in one branch."""
        pick = self._store[branch][2][idx]
        if steps is not None and self.steps[branch] > 1:
            pick = np.take_along_axis(pick, steps, axis=1)
        return pick

    def _gather(self, picks: Mapping[str, np.ndarray | torch.Tensor]) -> tuple[dict, dict]:
        """({branch: items}, {branch: zero levels or None}) of the store's rows ``picks``."""
        inputs, zeros = {}, {}
        for b, pick in picks.items():
            items, zero, _ = self._store[b]
            inputs[b], zeros[b] = items[pick], None if zero is None else zero[pick]
        return inputs, zeros

    def _read(self, branch: str, idx: np.ndarray, steps: np.ndarray | None):
        """(items (B, T, ...), zero levels or None) of a batch, read from the source."""
        source, size = self.sources[branch], self.sizes[branch]
        rows, zrows = [], []
        for k, i in enumerate(idx):
            v, s = self.items[i]
            pick = self.index[branch][v][s]
            if steps is not None and self.steps[branch] > 1:
                pick = pick[steps[k]]
            got = source.items(v, pick)
            rows.append(resize(got, size) if size else got)
            zrows.append(source.zero(v, pick))
        return np.stack(rows), None if zrows[0] is None else np.stack(zrows)


def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def upload(x, device: torch.device) -> torch.Tensor:
    """A host array or tensor on ``device``; on CUDA through pinned memory and a non-blocking
    copy, so that the host does not wait for the device's queued work."""
    t = _tensor(x)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.lru_cache
def _statistics(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """MEAN and STD as (1, 1, 3, 1, 1) tensors on the device, and the scale and shift that take
    uint8 intensities to normalised values: x / (255 STD) - MEAN / STD (made once per device:
    a tensor built from Python numbers is a host-to-device copy)."""
    mean, std = np.array(MEAN), np.array(STD)
    values = (mean, std, 1.0 / (255.0 * std), -mean / std)
    return tuple(upload(torch.tensor(v, dtype=dtype).view(1, 1, 3, 1, 1), device)
                 for v in values)


def network_inputs(inputs: Mapping[str, np.ndarray | torch.Tensor],
                   device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's items as float tensors on ``device``: uint8 images (B, T, H, W, 3), moved
    as uint8, normalised in one pass to (x / 255 - MEAN) / STD and shaped (B, T, 3, H, W)
    with channels-last memory; vectors (B, T, D) as they are. Items may be host arrays or
    tensors already on the device (prefetch)."""
    out = {}
    for b, x in inputs.items():
        t = upload(x, device)
        if t.dtype == torch.uint8:
            scale, shift = _statistics(t.device, torch.float32)[2:]
            t = torch.addcmul(shift, t.permute(0, 1, 4, 2, 3), scale)
        out[b] = t.float()
    return out


#: Kernel side from which a 2-D convolution runs channels-first: on the CPU (torch 2.13's
#: oneDNN) channels-last convolutions with kernels of 31 and more run 9-20x slower than
#: channels-first ones (MFFCNN's 33 and 35 px kernels), smaller ones as fast or faster
#: (benchmarks/NOTES.md, "Memory formats").
CHANNELS_FIRST_KERNEL = 31


def _channels_first_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(),) + args[1:]


def channels_last(network: nn.Module) -> nn.Module:
    """The network's 2-D convolutions in their fast memory format: weights channels-last
    (cuDNN's fast layout for bfloat16, oneDNN's on the CPU; images arrive channels-last), but
    for kernels of CHANNELS_FIRST_KERNEL and more, which keep channels-first weights and get
    their input made channels-first by a forward pre-hook. Values are unchanged (up to the
    summation order of the convolution); a second call changes nothing."""
    for m in network.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if max(m.kernel_size) < CHANNELS_FIRST_KERNEL:
            m.to(memory_format=torch.channels_last)
        elif _channels_first_input not in m._forward_pre_hooks.values():
            m.register_forward_pre_hook(_channels_first_input)
    return network


def _flip_and_affine(n: int, generator: torch.Generator, flip: bool, rotate: float,
                     crop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, whether it is flipped (n,) and the affine map (n, 2, 3) from output to
    input coordinates in [-1, 1] (torch's affine_grid convention) of its rotation and crop,
    with the flip folded in (x -> -x); drawn on the host from ``generator``."""
    u = torch.rand(n, 5, generator=generator)
    flipped = (u[:, 0] < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    angle = torch.deg2rad((u[:, 1] * 2 - 1) * rotate)
    scale = crop + (1 - crop) * u[:, 2]
    sign = 1 - 2 * flipped.to(scale.dtype)
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    shift_x, shift_y = (u[:, 3] * 2 - 1) * (1 - scale), (u[:, 4] * 2 - 1) * (1 - scale)
    theta = torch.stack([torch.stack([sign * cos, -sign * sin, sign * shift_x], 1),
                         torch.stack([sin, cos, shift_y], 1)], 1)
    return flipped, theta


@functools.lru_cache
def _pixel_centres(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Centres of n pixels in [-1, 1] (align_corners=False), made once per size and device."""
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Images (B, T, C, H, W) resampled bilinearly (border padding) at theta's affine map of
    the output pixel centres, the same map for every time step; channels-last memory out."""
    b, t, c, h, w = x.shape
    xs, ys = _pixel_centres(w, x.device, x.dtype), _pixel_centres(h, x.device, x.dtype)[:, None]
    th = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    grid = (th[:, :, 0] * xs + th[:, :, 1] * ys + th[:, :, 2]).permute(0, 2, 3, 1)
    out = nn.functional.grid_sample(x.reshape(b, t * c, h, w), grid, padding_mode="border",
                                    align_corners=False)
    return out.view(b, t, c, h, w).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


class Draw(NamedTuple):
    """One batch's augmentation (augment_draws): whether it resamples (a rotation or crop is
    configured) and flips any sample; per sample, flipped (n, 1, 1, 1) and the affine map
    (n, 2, 3) of _flip_and_affine, on the device."""

    resample: bool
    any_flip: bool
    flipped: torch.Tensor
    theta: torch.Tensor


def augment_draws(generator: torch.Generator, n: int, flip: bool, rotate: float, crop: float,
                  device: torch.device, chunk: int = 1) -> Iterator[Draw]:
    """The augmentation of batches of ``n`` samples: one random horizontal flip, rotation (up
    to ``rotate`` degrees) and crop (``crop``..1 of the side) per sample, drawn on the host from
    ``generator`` and moved to ``device`` ``chunk`` batches at a time (one copy); the same
    draws, batch after batch, whatever the chunk."""
    resample = rotate > 0 or crop < 1
    while True:
        flipped, theta = _flip_and_affine(n * chunk, generator, flip, rotate, crop)
        any_flip = flipped.view(chunk, n).any(1).tolist()
        both = upload(torch.cat([theta.flatten(1), flipped[:, None].to(theta.dtype)], 1), device)
        thetas, flips = both[:, :6].view(chunk, n, 2, 3), (both[:, 6] > 0.5).view(chunk, n, 1, 1, 1)
        for k in range(chunk):
            yield Draw(resample, any_flip[k], flips[k], thetas[k])


def augment(inputs: dict[str, torch.Tensor], zeros: Mapping[str, np.ndarray | torch.Tensor | None],
            draw: Draw) -> dict:
    """``draw`` (augment_draws) applied to normalised inputs (network_inputs), the same for
    every image branch and time step. With a rotation or crop, the flip is part of one bilinear
    resampling; without, a mirror. A flip negates the x flow of flow inputs about its zero
    level z (``zeros``: (B, T, 2) in [0, 1], as SampleSet gives them): x -> 2z - x in
    intensities, the same in normalised values. Flow vectors are not rotated: a few degrees
    change them by a few percent. Vector inputs are left as they are. Nothing waits for the
    device."""
    out = {}
    for b, x in inputs.items():
        if x.ndim != 5 or not (draw.resample or draw.any_flip):
            out[b] = x
            continue
        f = draw.flipped
        x = (_resample(x, draw.theta.to(x.dtype)) if draw.resample
             else torch.where(f[:, None], x.flip(-1), x))
        if draw.any_flip and zeros.get(b) is not None:
            mean, std = (s[0, 0, 0] for s in _statistics(x.device, x.dtype)[:2])
            z = (upload(zeros[b], x.device)[..., 0].to(x.dtype) - mean) / std  # (B, T)
            x[:, :, 0] = torch.where(f, 2 * z[..., None, None] - x[:, :, 0], x[:, :, 0])
        out[b] = x
    return out


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


_END = object()


def _map(fn, tree):
    """``fn`` applied to every array (numpy or torch) of nested dicts and tuples; anything
    else is left as it is."""
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_map(fn, v) for v in tree)
    return fn(tree) if isinstance(tree, (np.ndarray, torch.Tensor)) else tree


def prefetch(source: Iterator, device: torch.device, ahead: int = 2) -> Iterator:
    """The items of ``source`` (nested dicts and tuples of arrays and other values), made
    ``ahead`` items ahead in a background thread, with their arrays as tensors: on the CPU as
    they are; on CUDA host arrays pinned and copied to the device, and the source's own device
    work done, on a side stream in that thread, the consumer's stream waiting for each item on
    the device (the host does not wait). The host
    runs at most ``ahead`` + 1 items ahead of the device, then waits for the oldest item's
    work, so that memory stays bounded."""
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None
    threads = torch.get_num_threads()  # OpenMP thread settings are per thread

    def produce():
        if not cuda:
            item = next(source, _END)
            return (item if item is _END else _map(_tensor, item)), None
        with torch.cuda.stream(stream):  # the source's own device work (gathers) too
            item = next(source, _END)
            if item is _END:
                return item, None
            moved = _map(lambda a: upload(a, device), item)
            copied = torch.cuda.Event()
            copied.record(stream)
        return moved, copied

    with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        pending = collections.deque(pool.submit(produce) for _ in range(ahead))
        consumed: collections.deque = collections.deque()
        try:
            while True:
                item, copied = pending.popleft().result()
                if item is _END:
                    return
                pending.append(pool.submit(produce))
                if copied is not None:
                    current = torch.cuda.current_stream(device)
                    current.wait_event(copied)
                    _map(lambda t: t.record_stream(current), item)
                yield item
                if cuda:  # the consumer has queued its work on this item
                    consumed.append(torch.cuda.Event())
                    consumed[-1].record(torch.cuda.current_stream(device))
                    if len(consumed) > ahead + 1:
                        consumed.popleft().synchronize()
        finally:
            for future in pending:
                future.cancel()


def _draw_steps(rng: np.random.Generator, n: int, k: int | None,
                aligned: int) -> np.ndarray | None:
    """Per sample, ``k`` distinct sorted time steps of ``aligned`` (None: all steps). One step
    per sample is one vectorised draw: numpy's ``integers`` gives the same values from the
    same generator state as a ``choice(aligned, 1, replace=False)`` per sample, ~40x faster."""
    if k is None:
        return None
    if min(k, aligned) == 1:
        return rng.integers(0, aligned, (n, 1))
    return np.sort(np.stack([rng.choice(aligned, min(k, aligned), replace=False)
                             for _ in range(n)]), axis=1)


def _moved(batches: Iterator, samples: SampleSet, device: torch.device) -> Iterator:
    """``samples``' batches as tensors on ``device``: prefetched (prefetch) from a store on the
    host or read from the sources; from a store on the device (SampleSet.place) made in the
    caller's thread, where a batch is a few queued device operations that a background thread
    would only delay (benchmarks/NOTES.md, "GPU")."""
    if samples.placed_on() is None:
        return prefetch(batches, device)
    return (_map(lambda a: upload(a, device), batch) for batch in batches)


#: Training batches whose draws (samples, time steps, augmentation) are made and moved to
#: the device together: one copy per chunk instead of a few small ones per step.
CHUNK = 32


def _batches(samples: SampleSet, cfg: dict, rng: np.random.Generator,
             device: torch.device) -> Iterator:
    """Random training batches (inputs, zero levels, labels) as tensors on ``device``, drawn
    in order from ``rng``: prefetched from the host (prefetch), or gathered CHUNK at a time
    from a store on the device (SampleSet.gathered)."""
    k, aligned = cfg["sample_steps"], samples.aligned_steps()

    def draws():
        while True:
            idx = rng.integers(0, len(samples), cfg["batch_size"])
            yield idx, _draw_steps(rng, len(idx), k, aligned)

    if samples.placed_on() is None:
        return prefetch((samples.batch(*d) for d in draws()), device)
    return samples.gathered(draws(), CHUNK)


#: Share of the free device memory that a sample set's store may take on the device.
DEVICE_STORE_SHARE = 0.25


def place_on_device(samples: SampleSet | None, device: torch.device) -> bool:
    """Keep ``samples``' store on CUDA when it takes at most DEVICE_STORE_SHARE of the free
    device memory (the rest is the network's); True if it is there."""
    if samples is None or device.type != "cuda" or not samples.store_bytes():
        return False
    placed, size = samples.placed_on(), samples.store_bytes()
    if placed is not None:
        return placed.type == "cuda"
    free, _ = torch.cuda.mem_get_info(device)
    if size > DEVICE_STORE_SHARE * free:
        log.info("samples stay on the host: %.0f MB > %.0f%% of the device's %.0f MB free",
                 size / 2 ** 20, 100 * DEVICE_STORE_SHARE, free / 2 ** 20)
        return False
    samples.place(device)
    return True


def fit(network: nn.Module, train_set: SampleSet, val_set: SampleSet | None, cfg: dict,
        seed: int, device: torch.device) -> dict:
    """Train with the configured optimizer and schedule on random mini-batches; with a
    validation set, evaluate every ``eval_every`` steps, keep the best model and stop after
    ``patience`` evaluations without improvement. Returns the training history."""
    from vfer.nets.registry import OPTIMIZERS, SCHEDULES

    gen = torch.Generator().manual_seed(seed)
    channels_last(network.to(device).train())
    for samples in (train_set, val_set):
        place_on_device(samples, device)
    opt = OPTIMIZERS.build(cfg["optimizer"], network.parameters(), cfg)
    schedule = SCHEDULES.build(cfg["schedule"], cfg)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    aug = cfg["augment"]
    every = cfg["eval_every"] or max(1, cfg["steps"] // 10)
    history = {"loss": [], "val_loss": [], "best_step": None}
    best, best_loss, waited, losses = None, np.inf, 0, []
    batches = _batches(train_set, cfg, np.random.default_rng(seed), device)
    draws = augment_draws(gen, cfg["batch_size"], aug["flip"], aug["rotate"], aug["crop"],
                          device, CHUNK)
    try:
        for step in range(cfg["steps"]):
            inputs, zeros, y = next(batches)
            x = augment(network_inputs(inputs, device), zeros, next(draws))
            with autocast(device):
                loss = loss_fn(network(x), y)
            opt.zero_grad()
            loss.backward()
            opt.lr = cfg["lr"] * schedule(step)
            opt.step()
            losses.append(loss.detach())  # no host synchronisation inside the loop
            if (step + 1) % every and step + 1 != cfg["steps"]:
                continue
            history["loss"] += torch.stack(losses).float().cpu().tolist()
            losses = []
            recent = float(np.mean(history["loss"][-every:]))
            if not math.isfinite(recent):
                if best is None:
                    raise FloatingPointError(f"training diverged: the loss is {recent} by step "
                                             f"{step + 1} and no earlier validated model is "
                                             "kept (a lower lr?)")
                log.warning("training diverged by step %d (loss %s): the best validated model "
                            "(step %d) is kept", step + 1, recent, history["best_step"])
                break
            if val_set is None or not len(val_set):
                log.info("step %d/%d loss %.4f", step + 1, cfg["steps"], recent)
                continue
            val_loss = evaluate_loss(network, val_set, device, cfg["batch_size"])
            history["val_loss"].append((step + 1, val_loss))
            log.info("step %d/%d loss %.4f validation loss %.4f", step + 1, cfg["steps"],
                     recent, val_loss)
            if val_loss < best_loss - 1e-4:
                best_loss, waited, history["best_step"] = val_loss, 0, step + 1
                best = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                waited += 1
                if waited >= cfg["patience"]:
                    log.info("early stop: no improvement in %d evaluations", waited)
                    break
            network.train()
    finally:
        batches.close()
    if best is not None:
        network.load_state_dict(best)
    network.eval()
    return history


@torch.no_grad()
def evaluate_loss(network: nn.Module, samples: SampleSet, device: torch.device,
                  batch: int) -> float:
    """Mean cross-entropy over whole segments (every time step); batches moved by _moved, the
    sum kept on the device (float64) until the end."""
    network.eval()
    total, n = torch.zeros((), dtype=torch.float64, device=device), 0
    chunks = (samples.batch(np.arange(i, min(i + batch, len(samples))))[::2]
              for i in range(0, len(samples), batch))
    for inputs, y in _moved(chunks, samples, device):
        with autocast(device):
            logits = network(network_inputs(inputs, device))
        total += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        n += len(y)
    return total.item() / max(n, 1)


# --- a model per fold ----------------------------------------------------------------------

def split_validation(subjects: list[str], fraction: float, seed: int) -> tuple[set, set]:
    """Training subjects split into (fit, validation): ``fraction`` of them (at least one,
    none if only one subject) for early stopping; seeded."""
    subjects = sorted(set(subjects))
    k = int(round(fraction * len(subjects)))
    k = min(max(k, 1), len(subjects) - 1) if fraction > 0 and len(subjects) > 1 else 0
    order = np.random.default_rng(seed).permutation(len(subjects))
    val = {subjects[i] for i in order[:k]}
    return set(subjects) - val, val


def initial_network(model: dict, classes: list[str]):
    """The model's network with its configured initialisation and initial weights files;
    returns (network, provenance of the initial weights per branch)."""
    from vfer.nets.backbones import load_weights
    from vfer.nets.network import Network
    from vfer.nets.registry import BACKBONES, INITS

    torch.manual_seed(model["train"]["seed"])
    network = Network(model["network"], len(classes))
    INITS.get(model["train"]["init"])(network)
    initial = {}
    for branch, backbone in network.backbones().items():
        path = model["weights"].get(branch)
        if not path:
            initial[branch] = {"path": "random", "sha256": "random"}
            continue
        name = next(b["backbone"] for b in model["network"]["branches"] if b["name"] == branch)
        meta = BACKBONES.meta(name)
        info = load_weights(backbone, path, meta["head"], optional=(".se.",))
        initial[branch] = {"path": info["path"], "sha256": info["sha256"]}
        log.info("%s: initial weights %s (sha256 %s)", branch, info["path"], info["sha256"])
    if any(v["path"] == "random" for v in initial.values()):
        log.warning("%s: %s start from random initialisation (weights: null)", model["name"],
                    sorted(b for b, v in initial.items() if v["path"] == "random"))
    return network, initial


def sources_of(model: dict, shards: Mapping[str, list[Mapping[str, str]]]) -> dict:
    """Open each branch's input over its shard files."""
    out = {}
    try:
        for branch, source in model["sources"].items():
            out[branch] = InputSource(source["input"], shards[branch])
    except BaseException:
        for s in out.values():
            s.close()
        raise
    return out


def train_model(model: dict, shards: Mapping[str, list[Mapping[str, str]]], folds, fold: int,
                classes: list[str], device: torch.device, model_out: str, info_out: str) -> dict:
    """Train a network on the training subjects of ``fold``; save its weights and a JSON
    record of exactly what it was trained on. Raises LeakageError if a training or validation
    video belongs to a subject tested in this fold. ``fold`` -1 (``FINAL``) trains on every
    row of ``folds``: the final model, which nothing tests."""
    cfg, fold = model["train"], int(fold)
    if fold == FINAL:  # every video once (a repeated protocol lists each once per repetition)
        train_rows, tested = folds.drop_duplicates("video_id"), folds.iloc[:0]
    else:
        train_rows, tested = fold_rows(folds, fold)
    seed = cfg["seed"] + max(fold, 0)  # the final model takes fold 0's seed
    class_index = {c: i for i, c in enumerate(classes)}
    sizes = {b["name"]: b["size"] for b in model["network"]["branches"]}
    sources = sources_of(model, shards)
    try:
        present = set.intersection(*(set(s.videos()) for s in sources.values()))
        rows = train_rows[train_rows["video_id"].isin(present)]
        if rows.empty:
            raise ValueError(f"fold {fold}: no training video has every input of "
                             f"{model['name']}")
        labels = dict(zip(rows["video_id"], rows["label"].map(class_index)))
        if "split" in rows and (rows["split"] == "val").any():  # the predefined validation set
            held = rows["split"] == "val"
        else:
            _, val_subjects = split_validation(list(rows["subject"]), cfg["val_fraction"], seed)
            held = rows["subject"].isin(val_subjects)
        fit_ids, val_ids = sorted(rows.loc[~held, "video_id"]), sorted(rows.loc[held, "video_id"])
        fit_subjects, val_subjects = set(rows.loc[~held, "subject"]), set(rows.loc[held, "subject"])
        leaked = (set(fit_ids) | set(val_ids)) & set(tested["video_id"]) or \
            (fit_subjects | val_subjects) & set(tested["subject"])
        if leaked:
            raise LeakageError(f"fold {fold}: {sorted(leaked)[:3]} would be trained on and "
                               "tested")
        fit_set = SampleSet(sources, sizes, fit_ids, labels, cfg["cache_mb"])
        val_set = SampleSet(sources, sizes, val_ids, labels, cfg["cache_mb"]) if val_ids \
            else None
        log.info("fold %d: %d training segments from %d videos (%d subjects), %d validation "
                 "segments from %d videos (%d subjects)", fold, len(fit_set), len(fit_ids),
                 len(fit_subjects), 0 if val_set is None else len(val_set), len(val_ids),
                 len(val_subjects))
        network, initial = initial_network(model, classes)
        history = fit(network, fit_set, val_set, cfg, seed, device)
    finally:
        for s in sources.values():
            s.close()
    with atomic_path(model_out) as tmp:
        torch.save({k: v.cpu() for k, v in network.state_dict().items()}, tmp)
    subjects = sorted(fit_subjects | val_subjects)
    info = {"fold": fold, "model": model["name"], "initial_weights": initial,
            "train_videos": fit_ids, "validation_videos": val_ids,
            "train_subjects": subjects, "train_subjects_sha256": sha256_of(subjects),
            "train_videos_sha256": sha256_of(fit_ids + val_ids),
            "steps_run": len(history["loss"]), "best_step": history["best_step"],
            "final_loss": float(np.mean(history["loss"][-10:])) if history["loss"] else None,
            "val_loss": history["val_loss"], "seed": seed}
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def train_final(model: dict, shards: Mapping[str, list[Mapping[str, str]]], folds,
                classes: list[str], device: torch.device, model_out: str, info_out: str) -> dict:
    """A network of the final model: trained on every subject of ``folds`` (a ``val_fraction``
    of them held out for early stopping, as in every fold), or, with ``finetune: none``, its
    initial weights as they are."""
    if model["finetune"] != "none":
        return train_model(model, shards, folds, FINAL, classes, device, model_out, info_out)
    network, initial = initial_network(model, classes)
    with atomic_path(model_out) as tmp:
        torch.save({k: v.cpu() for k, v in network.state_dict().items()}, tmp)
    info = {"fold": FINAL, "model": model["name"], "initial_weights": initial,
            "finetune": "none", "train_videos": [], "validation_videos": [],
            "train_subjects": [], "train_subjects_sha256": sha256_of([]),
            "train_videos_sha256": sha256_of([])}
    with atomic_path(info_out) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info
