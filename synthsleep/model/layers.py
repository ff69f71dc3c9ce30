"""Shared building blocks: fixed sin-cos positions and a pre-norm transformer block.

Attention uses ``F.scaled_dot_product_attention`` with an explicit key mask (no nested tensors,
no fast-path branches), so the eval graph exports to ONNX and a key padding mask behaves
identically in training and export. The boolean key mask becomes an additive bias (0 or -inf,
[B, 1, 1, S]) once per ``Transformer``: the exporter turns a boolean mask into a NaN check and a
select over every [B, H, S, S] attention matrix (for rows with no key at all, which our masks
never have: the no-signal token is always attended), 7 % of the encoder's time on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_positions(n: int, dim: int) -> Tensor:
    """Fixed 1-D sin-cos position table [n, dim] (dim even), as in MAE / NeuroNet."""
    if dim % 2:
        raise ValueError(f"sin-cos positions need an even dim, got {dim}")
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    omega = 1.0 / (10000.0 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)))
    ang = pos * omega[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).float()


def key_bias(key_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """bool [B, S] (True = key may be attended) -> additive attention bias [B, 1, 1, S]: 0 where
    a key may be attended, -inf where not (every row must keep at least one key)."""
    zero = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    return zero.masked_fill(~key_mask, float("-inf"))[:, None, None, :]


class Attention(nn.Module):
    """Multi-head self-attention; ``bias`` [B, 1, 1, S] additive (``key_bias``) or None."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, S, hd]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, s, d)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` blocks then a final LayerNorm. x [B, S, dim] -> [B, S, dim]."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x [B, S, dim], key_mask bool [B, S] (True = may be attended) or None -> [B, S, dim]."""
        bias = None if key_mask is None else key_bias(key_mask, x.dtype)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.norm(x)


def random_keep(n: int, length: int, keep: int, device: torch.device,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random per-row subset of ``keep`` of ``length`` positions.

    Returns:
        keep_idx: long [n, keep], sorted ascending (kept positions).
        masked: bool [n, length], True where a position is masked (not kept).
    """
    noise = torch.rand(n, length, device=device, generator=generator)
    keep_idx = torch.argsort(noise, dim=1)[:, :keep].sort(dim=1).values
    masked = torch.ones(n, length, dtype=torch.bool, device=device)
    masked.scatter_(1, keep_idx, False)
    return keep_idx, masked


def n_keep(length: int, mask_ratio: float) -> int:
    """Tokens kept when masking ``mask_ratio`` of ``length`` (at least one)."""
    return max(1, int(round(length * (1.0 - mask_ratio))))


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x [N, S, D], idx long [N, K] -> [N, K, D]."""
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[-1]))


def unmask_tokens(visible: Tensor, keep_idx: Tensor, length: int, mask_token: Tensor) -> Tensor:
    """Scatter visible tokens [N, K, D] back to [N, length, D], ``mask_token`` [D] elsewhere."""
    n, _, d = visible.shape
    full = mask_token.reshape(1, 1, d).expand(n, length, d).clone()
    return full.scatter(1, keep_idx[:, :, None].expand(-1, -1, d), visible)
