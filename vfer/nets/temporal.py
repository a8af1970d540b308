"""Temporal models: a segment's sequence of per-step features -> one vector (B, out_dim).

Inputs are vector sequences (B, T, D), map sequences (B, T, C, H, W) or, for ``NestedLSTM``,
a list of vector sequences (one per tap). Constructors take the per-step shape first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _vector(in_shape: Sequence[int], kind: str) -> int:
    if len(in_shape) != 1:
        raise ValueError(f"{kind} takes vector sequences (D,), got per-step shape "
                         f"{tuple(in_shape)}")
    return int(in_shape[0])


def _map(in_shape: Sequence[int], kind: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"{kind} takes map sequences (C, H, W), got per-step shape "
                         f"{tuple(in_shape)}")
    c, h, w = (int(v) for v in in_shape)
    return c, h, w


class Mean(nn.Module):
    """Average over time."""

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.out_dim = _vector(in_shape, "mean")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


class Max(nn.Module):
    """Maximum over time, per dimension."""

    def __init__(self, in_shape: Sequence[int]):
        super().__init__()
        self.out_dim = _vector(in_shape, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(1)


class LSTM(nn.Module):
    """Stacked LSTM; the output is the top layer's hidden state at the last time step."""

    def __init__(self, in_shape: Sequence[int], hidden: int = 128, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(_vector(in_shape, "lstm"), hidden, layers, batch_first=True,
                            dropout=dropout)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, -1]


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM; the output is each direction's final hidden state (the
    forward direction's at the last step, the backward direction's at the first)."""

    def __init__(self, in_shape: Sequence[int], hidden: int = 128, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(_vector(in_shape, "bilstm"), hidden, layers, batch_first=True,
                            dropout=dropout, bidirectional=True)
        self.hidden = hidden
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lstm(x)[0]
        return torch.cat([y[:, -1, :self.hidden], y[:, 0, self.hidden:]], 1)


class ConvLSTMCell(nn.Module):
    """One peephole ConvLSTM layer (Shi et al.) at a fixed resolution, over a whole sequence.

    i = σ(Wxi*x + Whi*h + Wci∘c_{t-1} + bi), f likewise, c = f∘c_{t-1} + i∘tanh(Wxc*x + Whc*h
    + bc), o = σ(Wxo*x + Who*h + Wco∘c_{t-1} + bo) (c_{t-1}, as the enhanced-ConvLSTM paper
    writes it), h = o∘tanh(c). ``conv_x`` holds Wx* and the biases, ``conv_h`` holds Wh*, both
    with output channels ordered i, f, c, o; ``w_ci``, ``w_cf``, ``w_co`` (C, H, W) are the
    Hadamard peepholes, initialised to 0.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, size: tuple[int, int]):
        super().__init__()
        self.conv_x = nn.Conv2d(in_channels, 4 * channels, kernel, padding="same")
        self.conv_h = nn.Conv2d(channels, 4 * channels, kernel, padding="same", bias=False)
        self.w_ci = nn.Parameter(torch.zeros(channels, *size))
        self.w_cf = nn.Parameter(torch.zeros(channels, *size))
        self.w_co = nn.Parameter(torch.zeros(channels, *size))
        self.channels = channels

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """o∘tanh(c_t) and c_t from x_t, h_{t-1}, c_{t-1}."""
        i, f, g, o = (self.conv_x(x) + self.conv_h(h)).chunk(4, 1)
        i = torch.sigmoid(i + self.w_ci * c)
        f = torch.sigmoid(f + self.w_cf * c)
        o = torch.sigmoid(o + self.w_co * c)
        c = f * c + i * torch.tanh(g)
        return o * torch.tanh(c), c

    def hidden(self, u: torch.Tensor, x: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """h_t from u = o∘tanh(c_t), x_t and h_{t-2}: plain ConvLSTM uses u."""
        return u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in, H, W) -> hidden states (B, T, C, H, W), starting from zero states."""
        b, _, _, hh, ww = x.shape
        h1 = h2 = c = x.new_zeros(b, self.channels, hh, ww)
        out = []
        for t in range(x.shape[1]):
            u, c = self.step(x[:, t], h1, c)
            h1, h2 = self.hidden(u, x[:, t], h2), h1
            out.append(h1)
        return torch.stack(out, 1)


def _groups(groups: int, channels: int) -> int:
    """The largest group count <= min(groups, channels) that divides ``channels``."""
    g = max(1, min(groups, channels))
    while channels % g:
        g -= 1
    return g


class EnhancedConvLSTMCell(ConvLSTMCell):
    """Paper 004's cell: h_t = GroupNorm(o∘tanh(c_t) + h_{t-2} + Wxs*x_t), h_{-1} = h_0 = 0;
    ``conv_s`` (Wxs, no bias, the layer's kernel) maps input to hidden channels."""

    def __init__(self, in_channels: int, channels: int, kernel: int, size: tuple[int, int],
                 groups: int = 4):
        super().__init__(in_channels, channels, kernel, size)
        self.conv_s = nn.Conv2d(in_channels, channels, kernel, padding="same", bias=False)
        self.norm = nn.GroupNorm(_groups(groups, channels), channels)

    def hidden(self, u: torch.Tensor, x: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return self.norm(u + h2 + self.conv_s(x))


class ConvLSTM(nn.Module):
    """Stacked ConvLSTM layers ('same' padding), 2x2 max pooling of every hidden state between
    layers when ``pool``; the output is the global average of the last layer's final hidden
    state (out_dim = channels[-1])."""

    CELL = ConvLSTMCell

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32,),
                 kernels: Sequence[int] = (3,), pool: bool = True, **cell_options):
        super().__init__()
        kind = type(self).__name__
        c, h, w = _map(in_shape, kind)
        if not channels or len(kernels) != len(channels):
            raise ValueError(f"{kind}: channels {list(channels)} and kernels {list(kernels)} "
                             "need one entry per layer")
        cells = []
        for layer, (ch, k) in enumerate(zip(channels, kernels)):
            if layer and pool:
                h, w = h // 2, w // 2
                if not h or not w:
                    raise ValueError(f"{kind}: input {tuple(in_shape)} is too small for "
                                     f"{len(channels)} layers with pooling")
            cells.append(self.CELL(c, ch, k, (h, w), **cell_options))
            c = ch
        self.layers = nn.ModuleList(cells)
        self.pool = pool
        self.out_dim = int(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, cell in enumerate(self.layers):
            if layer and self.pool:
                x = nn.functional.max_pool2d(x.flatten(0, 1), 2).unflatten(0, x.shape[:2])
            x = cell(x)
        return x[:, -1].mean((2, 3))


class EnhancedConvLSTM(ConvLSTM):
    """ConvLSTM with paper 004's enhanced cells (GroupNorm with ``groups`` groups, fewer where
    they must divide the channels)."""

    CELL = EnhancedConvLSTMCell

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int] = (32,),
                 kernels: Sequence[int] = (3,), pool: bool = True, groups: int = 4):
        super().__init__(in_shape, channels, kernels, pool, groups=groups)


class NestedLSTM(nn.Module):
    """Paper 003's nested LSTM: a T-LSTM per tap over time; the sequence of their last outputs
    (one per tap, in tap order) goes through the C-LSTM, whose last output is the result."""

    def __init__(self, in_shapes: Sequence[Sequence[int]], hidden: int = 64, layers: int = 2,
                 c_hidden: int = 64, c_layers: int = 2):
        super().__init__()
        if not in_shapes:
            raise ValueError("nested_lstm needs at least one tap sequence")
        self.t_lstms = nn.ModuleList(
            nn.LSTM(_vector(s, "nested_lstm"), hidden, layers, batch_first=True)
            for s in in_shapes)
        self.c_lstm = nn.LSTM(hidden, c_hidden, c_layers, batch_first=True)
        self.out_dim = c_hidden

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(xs) != len(self.t_lstms):
            raise ValueError(f"nested_lstm was built for {len(self.t_lstms)} tap sequences, "
                             f"got {len(xs)}")
        last = torch.stack([lstm(x)[0][:, -1] for lstm, x in zip(self.t_lstms, xs)], 1)
        return self.c_lstm(last)[0][:, -1]
