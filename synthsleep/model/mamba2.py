"""Pure-PyTorch Mamba2 layer with mamba-ssm's parameter names and shapes (ngroups = 1).

Parameters (identical keys/shapes to ``mamba_ssm.modules.mamba2.Mamba2`` with ngroups=1,
rmsnorm=True, D_has_hdim=False, bias=False, conv_bias=True):

    in_proj.weight   [2*d_inner + 2*d_state + nheads, d_model]   outputs in order [z, x, B, C, dt]
    conv1d.weight    [conv_dim, 1, d_conv]   depthwise over xBC; conv_dim = d_inner + 2*d_state
    conv1d.bias      [conv_dim]
    dt_bias          [nheads]
    A_log            [nheads]
    D                [nheads]
    norm.weight      [d_inner]               gated RMSNorm: rmsnorm(y * silu(z)) * weight
    out_proj.weight  [d_model, d_inner]

States (mamba-ssm's inference cache layout):
    conv_state [B, conv_dim, d_conv]   the last d_conv inputs of the conv (newest last)
    ssm_state  [B, nheads, headdim, d_state]

``forward`` runs the chunked SSD scan (Mamba2 paper, Listing 1) with initial state in and final
state out, so a night can be processed in chunks with the state carried (truncated BPTT);
``step`` is the explicit one-token recurrence in plain tensor ops (ONNX-exportable).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

try:  # optional fused kernels (extra "cuda"); never required
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _mamba_chunk_scan
except Exception:  # noqa: BLE001 - any import failure (no CUDA, no triton) means "not available"
    _mamba_chunk_scan = None


def cuda_kernels_available() -> bool:
    """True when mamba-ssm's chunked-scan kernel imported and CUDA is present."""
    return _mamba_chunk_scan is not None and torch.cuda.is_available()


def segsum(x: Tensor) -> Tensor:
    """Stable segment sums: x [..., T] -> [..., T, T] with out[i, j] = sum(x[j+1..i]) for i >= j,
    -inf above the diagonal (so exp() gives the causal decay matrix)."""
    t = x.shape[-1]
    xe = x[..., None].expand(*x.shape, t)  # xe[..., i, j] = x[i]
    below = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=-1)
    xe = xe.masked_fill(~below, 0.0)
    out = torch.cumsum(xe, dim=-2)
    keep = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=0)
    return out.masked_fill(~keep, float("-inf"))


def ssd_scan(x: Tensor, a: Tensor, b: Tensor, c: Tensor, chunk: int,
             initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Chunked state-space-dual scan of h_t = exp(a_t) h_{t-1} + x_t b_t^T, y_t = h_t c_t.

    Args:
        x: [B, L, H, P] inputs already multiplied by dt.
        a: [B, L, H] log-decays (A * dt, <= 0).
        b, c: [B, L, N] (one group shared by all heads).
        chunk: block length; L need not be a multiple (zero-padded; padding leaves h unchanged).
        initial_state: [B, H, P, N] or None (zeros).

    Returns:
        y [B, L, H, P], final_state [B, H, P, N].
    """
    bsz, length, h, p = x.shape
    n = b.shape[-1]
    pad = (-length) % chunk
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        a = F.pad(a, (0, 0, 0, pad))
        b = F.pad(b, (0, 0, 0, pad))
        c = F.pad(c, (0, 0, 0, pad))
    nc = (length + pad) // chunk
    x = x.reshape(bsz, nc, chunk, h, p)
    b = b.reshape(bsz, nc, chunk, n)
    c = c.reshape(bsz, nc, chunk, n)
    a = a.reshape(bsz, nc, chunk, h).permute(0, 3, 1, 2)  # [B, H, C, l]
    a_cs = torch.cumsum(a, dim=-1)

    # 1. outputs within each chunk (quadratic, attention-like)
    decay = torch.exp(segsum(a))  # [B, H, C, l, s]
    cb = torch.einsum("bcln,bcsn->bcls", c, b)  # [B, C, l, s]
    y_diag = torch.einsum("bcls,bhcls,bcshp->bclhp", cb, decay, x)
    # 2. state at the end of each chunk from its own inputs
    decay_states = torch.exp(a_cs[..., -1:] - a_cs)  # [B, H, C, l]
    states = torch.einsum("bcln,bhcl,bclhp->bchpn", b, decay_states, x)
    # 3. recurrence across chunks, starting from the initial state
    if initial_state is None:
        initial_state = x.new_zeros(bsz, h, p, n)
    states = torch.cat([initial_state[:, None], states], dim=1)  # [B, C+1, H, P, N]
    decay_chunk = torch.exp(segsum(F.pad(a_cs[..., -1], (1, 0))))  # [B, H, C+1, C+1]
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]
    # 4. contribution of the carried-in state to each position
    y_off = torch.einsum("bcln,bchpn,bhcl->bclhp", c, states, torch.exp(a_cs))
    y = (y_diag + y_off).reshape(bsz, nc * chunk, h, p)[:, :length]
    return y, final_state


class RMSNormGated(nn.Module):
    """mamba-ssm's gated RMSNorm (norm_before_gate=False, one group): rms(y*silu(z)) * weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        y = y * F.silu(z)
        return y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class Mamba2(nn.Module):
    """One Mamba2 mixer layer. forward: u [B, L, d_model] -> (y [B, L, d_model], conv, ssm)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, chunk_size: int = 64, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 a_init_range: tuple[float, float] = (1.0, 16.0),
                 use_cuda_kernels: bool = True) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: d_inner={self.d_inner} not divisible by headdim={headdim}")
        self.headdim = headdim
        self.nheads = self.d_inner // headdim
        self.chunk_size = chunk_size
        self.conv_dim = self.d_inner + 2 * d_state
        self.use_cuda_kernels = use_cuda_kernels
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim,
                                bias=True)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*a_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNormGated(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    # ------------------------------------------------------------------ states
    def allocate_state(self, batch: int, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Zero states: conv [B, conv_dim, d_conv], ssm [B, nheads, headdim, d_state]."""
        return (torch.zeros(batch, self.conv_dim, self.d_conv, device=device, dtype=dtype),
                torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device,
                            dtype=dtype))

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    # ------------------------------------------------------------------ sequence
    def forward(self, u: Tensor, conv_state: Tensor | None = None,
                ssm_state: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """u [B, L, d_model] -> (y [B, L, d_model], conv_state, ssm_state) after the last token.

        States default to zeros. Gradients flow through the given states (detach them between
        truncated-BPTT chunks).
        """
        bsz, length, _ = u.shape
        if conv_state is None or ssm_state is None:
            c0, s0 = self.allocate_state(bsz, u.device, u.dtype)
            conv_state = c0 if conv_state is None else conv_state
            ssm_state = s0 if ssm_state is None else ssm_state
        z, xbc, dt = self._split(self.in_proj(u))
        xbc_t = xbc.transpose(1, 2)  # [B, conv_dim, L]
        ctx = torch.cat([conv_state[:, :, 1:], xbc_t], dim=-1)  # [B, conv_dim, d_conv-1+L]
        new_conv = torch.cat([conv_state, xbc_t], dim=-1)[:, :, -self.d_conv:]
        xbc = F.silu(F.conv1d(ctx, self.conv1d.weight, self.conv1d.bias,
                              groups=self.conv_dim)).transpose(1, 2)  # [B, L, conv_dim]
        x, b, c = torch.split(xbc, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x = x.reshape(bsz, length, self.nheads, self.headdim)
        a = -torch.exp(self.A_log.float())  # [H]
        if self.use_cuda_kernels and u.is_cuda and _mamba_chunk_scan is not None:
            y, new_ssm = _mamba_chunk_scan(
                x.contiguous(), dt.contiguous(), a, b[:, :, None].contiguous(),
                c[:, :, None].contiguous(), self.chunk_size, D=self.D, z=None,
                dt_bias=self.dt_bias, dt_softplus=True, initial_states=ssm_state,
                return_final_states=True)
        else:
            dt = F.softplus(dt + self.dt_bias)  # [B, L, H]
            y, new_ssm = ssd_scan(x * dt[..., None], a * dt, b, c, self.chunk_size, ssm_state)
            y = y + x * self.D[:, None]
        y = self.norm(y.reshape(bsz, length, self.d_inner), z)
        return self.out_proj(y), new_conv, new_ssm

    # ------------------------------------------------------------------ one token
    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
        """One token: u [B, d_model] -> (y [B, d_model], new conv_state, new ssm_state).

        Plain out-of-place tensor ops, no data-dependent control flow (exports to ONNX).
        """
        z, xbc, dt = self._split(self.in_proj(u))
        conv_state = torch.cat([conv_state[:, :, 1:], xbc[:, :, None]], dim=-1)
        xbc = F.silu((conv_state * self.conv1d.weight[:, 0, :]).sum(dim=-1) + self.conv1d.bias)
        x, b, c = torch.split(xbc, [self.d_inner, self.d_state, self.d_state], dim=-1)
        a = -torch.exp(self.A_log)  # [H]
        dt = F.softplus(dt + self.dt_bias)  # [B, H]
        da = torch.exp(dt * a)  # [B, H]
        x = x.reshape(x.shape[0], self.nheads, self.headdim)  # [B, H, P]
        dbx = (dt[:, :, None] * x)[:, :, :, None] * b[:, None, None, :]  # [B, H, P, N]
        ssm_state = ssm_state * da[:, :, None, None] + dbx
        y = (ssm_state * c[:, None, None, :]).sum(dim=-1) + self.D[:, None] * x  # [B, H, P]
        y = self.norm(y.reshape(y.shape[0], self.d_inner), z)
        return self.out_proj(y), conv_state, ssm_state
