"""Frame backbone: 30-s epoch -> 27 overlapping 4-s frames -> one feature vector per frame.

Shapes (defaults: 100 Hz, 3000-sample epoch, 400-sample frames, 100-sample step):
    x [N, 3000] --frames--> [N, 27, 400] --reshape--> [N*27, 1, 400]
    three SE-ResNet branches (kernels 3/5/7), each: stem conv (stride s) + BN + maxpool 2 + ELU,
        then one strided (2) SE residual block per further channel count (64->128->128->256),
        global average pool -> [N*27, 256]
    concat branches [N*27, 768] -> Linear -> ELU -> Linear -> [N, 27, frame_dim]

``cfg.backbone_mode = "epoch"`` (an option; default ``"frames"`` as above and as published):
the branches run ONCE over the whole epoch [N, 1, 3000] (every sample seen once instead of ~4
times) and their feature maps [N, C, L] (L = 24 positions for ``small``, 94 for ``paper``) are
average-pooled into the 27 frames by a fixed matrix [27, L]: each position weighted by the
fraction of its span (3000 / L samples) inside the frame's 4-s window. Squeeze-excitation then
sees the whole epoch instead of one frame. The output has the same shape, so NeuroNet and
everything after it are unchanged; weights of one mode do not carry over to the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig


def frame_index(epoch_samples: int, frame_samples: int, frame_step: int) -> Tensor:
    """long [F, frame_samples]: sample indices of each frame (F = (E - W) // S + 1)."""
    n = (epoch_samples - frame_samples) // frame_step + 1
    return torch.arange(n)[:, None] * frame_step + torch.arange(frame_samples)[None, :]


class SqueezeExcite(nn.Module):
    """Channel attention: x [B, C, L] * sigmoid(MLP(mean_L x)) [B, C, 1]."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=-1)))))
        return x * s[:, :, None]


class SEResBlock(nn.Module):
    """conv(k, stride)-BN-ELU-conv(k)-BN-SE + shortcut (1x1 conv, stride) -> ELU.

    x [B, c_in, L] -> [B, c_out, ceil(L / stride)].
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, reduction: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.se = SqueezeExcite(c_out, reduction)
        self.short = nn.Sequential(
            nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.elu(self.bn1(self.conv1(x)))
        y = self.se(self.bn2(self.conv2(y)))
        return F.elu(y + self.short(x))


class Branch(nn.Module):
    """One kernel size: stem + SE residual blocks + global average pool. [B,1,W] -> [B, C_last]."""

    def __init__(self, channels: tuple[int, ...], kernel: int, stem_stride: int,
                 reduction: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, channels[0], kernel, stride=stem_stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(channels[0]),
            # max-pool before the ELU: the same values (ELU is monotonic), on half the positions
            nn.MaxPool1d(2, 2),
            nn.ELU(),
        )
        self.blocks = nn.Sequential(*(
            SEResBlock(channels[i], channels[i + 1], kernel, 2, reduction)
            for i in range(len(channels) - 1)
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=-1)

    def feature_map(self, x: Tensor) -> Tensor:
        """[B, 1, W] -> [B, C_last, L] before the global pool."""
        return self.blocks(self.stem(x))


def feature_length(samples: int, cfg: ModelConfig) -> int:
    """Positions of a branch's feature map over ``samples`` input samples (every kernel is odd
    with padding k // 2, so all branches agree): stem ceil(/s), maxpool floor(/2), then ceil(/2)
    per residual block."""
    n = -(-samples // cfg.backbone_stem_stride)
    n //= 2
    for _ in range(len(cfg.backbone_channels) - 1):
        n = -(-n // 2)
    return n


def frame_pool_matrix(cfg: ModelConfig) -> Tensor:
    """float [F, L]: row f averages the epoch feature map over frame f's window, each of the L
    positions (span ``epoch_samples / L`` samples) weighted by its overlap with the window."""
    n_pos = feature_length(cfg.epoch_samples, cfg)
    if n_pos < 1:
        raise ValueError(f"config {cfg.name!r}: the backbone leaves no positions over an epoch")
    span = cfg.epoch_samples / n_pos
    lo = torch.arange(n_pos, dtype=torch.float64) * span  # [L]
    start = torch.arange(cfg.n_frames, dtype=torch.float64)[:, None] * cfg.frame_step  # [F, 1]
    overlap = (torch.minimum(lo + span, start + cfg.frame_samples) - torch.maximum(lo, start)).clamp(min=0)
    return (overlap / overlap.sum(dim=1, keepdim=True)).float()


class FrameBackbone(nn.Module):
    """Multi-scale 1-D SE-ResNet over 4-s frames. x [N, 3000] -> features [N, F, frame_dim]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer(
            "frame_idx", frame_index(cfg.epoch_samples, cfg.frame_samples, cfg.frame_step),
            persistent=False,
        )
        self.branches = nn.ModuleList(
            Branch(cfg.backbone_channels, k, cfg.backbone_stem_stride, cfg.backbone_se_reduction)
            for k in cfg.backbone_kernels
        )
        self.epoch_mode = cfg.backbone_mode == "epoch"
        if self.epoch_mode:
            self.register_buffer("pool", frame_pool_matrix(cfg), persistent=False)  # [F, L]
        width = cfg.backbone_channels[-1] * len(cfg.backbone_kernels)
        self.head = nn.Sequential(
            nn.Linear(width, cfg.frame_dim), nn.ELU(), nn.Linear(cfg.frame_dim, cfg.frame_dim)
        )

    def frames(self, x: Tensor) -> Tensor:
        """x [N, E] -> [N, F, W] overlapping frames (a gather; exports to ONNX)."""
        if not torch.onnx.is_in_onnx_export() and x.shape[-1] != self.cfg.epoch_samples:
            raise ValueError(
                f"frame backbone expects epochs of {self.cfg.epoch_samples} samples, "
                f"got shape {tuple(x.shape)}"
            )
        return x[:, self.frame_idx]

    def forward(self, x: Tensor) -> Tensor:
        if self.epoch_mode:
            if not torch.onnx.is_in_onnx_export() and x.shape[-1] != self.cfg.epoch_samples:
                raise ValueError(f"frame backbone expects epochs of {self.cfg.epoch_samples} samples, "
                                 f"got shape {tuple(x.shape)}")
            maps = torch.cat([br.feature_map(x[:, None, :]) for br in self.branches], dim=1)  # [N, C, L]
            feats = torch.matmul(maps, self.pool.t()).transpose(1, 2)  # [N, F, C]
            return self.head(feats)  # [N, F, frame_dim]
        fr = self.frames(x)  # [N, F, W]
        n, f, w = fr.shape
        fr = fr.reshape(n * f, 1, w)  # [N*F, 1, W]
        feats = torch.cat([br(fr) for br in self.branches], dim=1)  # [N*F, C_last * branches]
        return self.head(feats).reshape(n, f, -1)  # [N, F, frame_dim]
