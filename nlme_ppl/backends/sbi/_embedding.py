"""Embedding networks for sbi: permutation-invariant (DeepSet) or recurrent (GRU) summaries
of padded event rows. The mask travels as the last channel of x (sbi needs fixed-shape x),
and padded rows change nothing."""

from __future__ import annotations

from ._torch import torch

nn = torch.nn

__all__ = ["MaskedDeepSet", "MaskedGRU", "EMBEDDINGS"]


class _RowStandardize(nn.Module):
    """Per-channel standardisation of row features, fitted on the observed rows of the training
    x; the statistics are buffers, so they are saved with the weights."""

    def __init__(self, num_features: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(num_features))
        self.register_buffer("scale", torch.ones(num_features))

    @torch.no_grad()
    def fit(self, x) -> None:
        rows = x[..., :-1][x[..., -1] > 0.5]
        self.loc.copy_(rows.mean(0))
        self.scale.copy_(rows.std(0).clamp_min(1e-3))

    def forward(self, feats):
        return (feats - self.loc) / self.scale


def _mlp(sizes, last_activation: bool = False):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MaskedDeepSet(nn.Module):
    """ρ(mean over observed rows of φ(row), log(1 + count)): φ and ρ are MLPs of width `hidden`."""

    def __init__(self, in_channels: int, hidden: int = 128, out_dim: int = 32):
        super().__init__()
        self.std = _RowStandardize(in_channels)
        self.phi = _mlp([in_channels, hidden, hidden, hidden], last_activation=True)
        self.rho = _mlp([hidden + 1, hidden, out_dim])

    def forward(self, x):
        m = (x[..., -1] > 0.5).to(x.dtype)
        h = self.phi(self.std(x[..., :-1])) * m[..., None]
        count = m.sum(1, keepdim=True)
        return self.rho(torch.cat([h.sum(1) / count.clamp_min(1.0), torch.log1p(count)], dim=-1))


class MaskedGRU(nn.Module):
    """A GRU over the observed rows in order (they come first; `pack_padded_sequence`), then an MLP."""

    def __init__(self, in_channels: int, hidden: int = 128, out_dim: int = 32):
        super().__init__()
        self.std = _RowStandardize(in_channels)
        self.gru = nn.GRU(in_channels, hidden, batch_first=True)
        self.head = _mlp([hidden + 1, hidden, out_dim])

    def forward(self, x):
        m = x[..., -1] > 0.5
        lengths = m.sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.std(x[..., :-1]), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(torch.cat([h[0], torch.log1p(lengths[:, None].to(x.dtype))], dim=-1))


EMBEDDINGS = {"deepset": MaskedDeepSet, "gru": MaskedGRU}
