"""The per-epoch encoder of a trained SleepModel with its M modalities stacked: for export.

``SleepModel.encode_epochs`` runs M separate NeuroNets (frame backbone + transformer) and M
separate fusion projections, one after the other. The maths of each is small (``small``: channels
8-32, width 64), so an exported graph of it is bound by the number of nodes, not by arithmetic:
~2,000 nodes per step at ~8 us each. ``StackedEncoder`` computes exactly the same function with
every per-modality weight stacked along a modality axis, so each layer is ONE node for all M:

    x [N, M, 3000] (absent modalities zeroed)
      frames / epoch as the columns of one image [1, M, W, R] (R = N*F frames, or N epochs)
      -> grouped convolutions with kernels [k, 1] down it (groups = M; BatchNorm folded in)
      -> squeeze-excitation as column means and grouped 1x1 convolutions, every other Linear as a
         batched matmul  x [.., M, S, in] @ W [M, in, out]
      -> feature maps pooled / averaged -> frame features [N, M, F, frame_dim]
      -> embed + positions, per-modality CLS -> transformer (LayerNorm affine [M, 1, D],
         attention over [N*M, H, 1+F, hd]) -> tokens [N, M, F, nn_dim]
      -> fusion projections (Linear-BN-ELU-Linear, BN folded) + modality token + positions
      -> the model's own Fusion.encode / present_mean -> embedding [N, fusion_dim]

The columns layout: a 1-D convolution over R frames of length L is the same as a 2-D convolution
with a [k, 1] kernel down ONE image of R columns, and ONNX Runtime runs that as a few large matrix
products (and in its blocked NCHWc layout) instead of R small ones: the convolutions of the
``small`` encoder take ~1.4-5x less time on a CPU this way (``benchmarks/bench_throughput.py``).
Columns rather than rows ([1, k] kernels along the last axis): squeeze-excitation's gate is one
value per channel and frame; broadcast over a short last axis (L = 4-13 positions) ONNX Runtime's
Mul runs ~8x slower than over the frames (R >= 27), and a residual block at the deeper levels
runs 20-25 % faster in columns (2026-11-30, ``small`` widths, one thread).

Inference only (eval-mode BatchNorm statistics are folded in at construction); the weights are
read from the model once, so build it after training and before export. Equal to
``encode_epochs`` to float32 rounding (tests/model/test_stacked.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frame_backbone import Branch, SEResBlock
from .layers import Block, Transformer


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Eval BatchNorm as y = x * scale + shift: (scale [C], shift [C])."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Conv1d without bias followed by eval BatchNorm -> (weight [C_out, C_in, k], bias [C_out])."""
    scale, shift = _bn_affine(bn)
    return conv.weight * scale[:, None, None], shift


class _GroupedConv(nn.Module):
    """M convolutions (each with its BatchNorm folded) as one grouped convolution down the columns
    of an image: [1, M*C_in, L, R] -> [1, M*C_out, L', R] (each column convolved on its own)."""

    def __init__(self, pairs: list[tuple[nn.Conv1d, nn.BatchNorm1d]]) -> None:
        super().__init__()
        conv = pairs[0][0]
        self.stride, self.padding, self.groups = (conv.stride[0], 1), (conv.padding[0], 0), len(pairs)
        folded = [_fold(c, b) for c, b in pairs]
        self.weight = nn.Parameter(torch.cat([w for w, _ in folded])[..., None], requires_grad=False)  # [MC, C_in, k, 1]
        self.bias = nn.Parameter(torch.cat([b for _, b in folded]), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)


class _ColumnMean(nn.Module):
    """The mean down each column: [1, C, L, R] -> [1, C, 1, R], as a depthwise convolution with an
    [L, 1] kernel of 1/L (ONNX Runtime's ReduceMean over a middle axis takes 2-3x longer at the
    ``small`` widths)."""

    def __init__(self, channels: int, length: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.full((channels, 1, length, 1), 1.0 / length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, groups=self.weight.shape[0])


class _GroupedLinear(nn.Module):
    """M Linear layers applied per position and column of an image: [1, M*in, L, R] -> [1, M*out, L, R]
    (one grouped 1x1 convolution)."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.groups = len(layers)
        self.weight = nn.Parameter(torch.cat([lin.weight for lin in layers])[:, :, None, None], requires_grad=False)
        self.bias = nn.Parameter(torch.cat([lin.bias for lin in layers]), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, groups=self.groups)


class _StackedLinear(nn.Module):
    """M Linear layers: x [..., M, S, in] -> [..., M, S, out] (one batched MatMul + Add)."""

    def __init__(self, layers: list[nn.Linear], scale: Tensor | None = None, shift: Tensor | None = None) -> None:
        super().__init__()
        w = torch.stack([lin.weight.t() for lin in layers])  # [M, in, out]
        b = torch.stack([lin.bias for lin in layers])[:, None]  # [M, 1, out]
        if scale is not None:  # an eval BatchNorm after the Linear, folded: [M, out] each
            w, b = w * scale[:, None], b * scale[:, None] + shift[:, None]
        self.weight = nn.Parameter(w, requires_grad=False)
        self.bias = nn.Parameter(b, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight) + self.bias


class _StackedLayerNorm(nn.Module):
    """M LayerNorms over the last dim: x [..., M, S, D], affine [M, 1, D]."""

    def __init__(self, norms: list[nn.LayerNorm]) -> None:
        super().__init__()
        self.eps = norms[0].eps
        self.shape = tuple(norms[0].normalized_shape)
        self.weight = nn.Parameter(torch.stack([n.weight for n in norms])[:, None], requires_grad=False)
        self.bias = nn.Parameter(torch.stack([n.bias for n in norms])[:, None], requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.shape, eps=self.eps) * self.weight + self.bias


class _StackedSEBlock(nn.Module):
    """M ``SEResBlock`` s down columns: [1, M*C_in, L, R] -> [1, M*C_out, ceil(L / stride), R]."""

    def __init__(self, blocks: list[SEResBlock], length: int) -> None:
        """``length``: positions of the block's output per column (what squeeze-excitation averages)."""
        super().__init__()
        self.conv1 = _GroupedConv([(b.conv1, b.bn1) for b in blocks])
        self.conv2 = _GroupedConv([(b.conv2, b.bn2) for b in blocks])
        self.short = _GroupedConv([(b.short[0], b.short[1]) for b in blocks])
        # squeeze-excitation's two Linear layers as grouped 1x1 convolutions over the columns: no
        # transposes between the feature maps [1, M*C, 1, R] and a [.., M, R, C] matmul layout
        self.mean = _ColumnMean(self.conv2.weight.shape[0], length)
        self.fc1 = _GroupedLinear([b.se.fc1 for b in blocks])
        self.fc2 = _GroupedLinear([b.se.fc2 for b in blocks])

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.elu(self.conv1(x)))  # [1, M*C, L, R]
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(self.mean(y)))))  # [1, M*C, 1, R]
        return F.elu(y * s + self.short(x))


class _StackedBranch(nn.Module):
    """M ``Branch`` es of one kernel size down columns: [1, M, W, R] -> feature maps [1, M*C_last, L, R]."""

    def __init__(self, branches: list[Branch], samples: int) -> None:
        """``samples``: the length of a column (a frame's or an epoch's samples)."""
        super().__init__()
        self.stem = _GroupedConv([(b.stem[0], b.stem[1]) for b in branches])
        # positions per column (odd kernels, padding k // 2): stem ceil(/s), max-pool floor(/2),
        # then each block ceil(/its stride) (as ``frame_backbone.feature_length``)
        length = -(-samples // branches[0].stem[0].stride[0]) // 2
        blocks = []
        for i in range(len(branches[0].blocks)):
            length = -(-length // branches[0].blocks[i].conv1.stride[0])
            blocks.append(_StackedSEBlock([b.blocks[i] for b in branches], length))
        self.blocks = nn.Sequential(*blocks)
        self.mean = _ColumnMean(blocks[-1].conv2.weight.shape[0], length)  # the global average pool

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(F.elu(F.max_pool2d(self.stem(x), (2, 1), (2, 1))))  # pool first: as the Branch


class _StackedBlock(nn.Module):
    """M pre-norm transformer ``Block`` s, no key mask: x [N, M, S, D] -> [N, M, S, D]."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.heads = blocks[0].attn.heads
        self.norm1 = _StackedLayerNorm([b.norm1 for b in blocks])
        self.qkv = _StackedLinear([b.attn.qkv for b in blocks])
        self.proj = _StackedLinear([b.attn.proj for b in blocks])
        self.norm2 = _StackedLayerNorm([b.norm2 for b in blocks])
        self.fc1 = _StackedLinear([b.mlp[0] for b in blocks])
        self.fc2 = _StackedLinear([b.mlp[3] for b in blocks])

    def forward(self, x: Tensor) -> Tensor:
        n, m, s, d = x.shape
        h = self.heads
        qkv = self.qkv(self.norm1(x)).reshape(n * m, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [N*M, H, S, hd]
        x = x + self.proj(y.transpose(1, 2).reshape(n, m, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class StackedEncoder(nn.Module):
    """``model.encode_epochs`` with the modalities stacked: (x [N, M, 3000], present bool [N, M])
    -> embedding [N, fusion_dim]. Build from a trained ``SleepModel`` (it is put in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.eval()
        cfg = model.cfg
        nets = [model.encoders[m] for m in cfg.modalities]
        self.cfg = cfg
        self.epoch_mode = cfg.backbone_mode == "epoch"
        bb = nets[0].backbone
        self.register_buffer("frame_idx", bb.frame_idx.clone(), persistent=False)  # [F, W]
        self.step, self.hops = cfg.frame_step, cfg.frame_samples // cfg.frame_step
        if cfg.frame_samples % cfg.frame_step or cfg.epoch_samples % cfg.frame_step:
            raise ValueError(f"stacked export needs frame_samples ({cfg.frame_samples}) and epoch_samples "
                             f"({cfg.epoch_samples}) to be multiples of frame_step ({cfg.frame_step})")
        if self.epoch_mode:
            self.register_buffer("pool", bb.pool.clone(), persistent=False)  # [F, L]
        column = cfg.epoch_samples if self.epoch_mode else cfg.frame_samples
        self.branches = nn.ModuleList(_StackedBranch([n.backbone.branches[i] for n in nets], column)
                                      for i in range(len(bb.branches)))
        self.head1 = _StackedLinear([n.backbone.head[0] for n in nets])
        self.head2 = _StackedLinear([n.backbone.head[2] for n in nets])
        self.embed = _StackedLinear([n.embed for n in nets])
        self.register_buffer("pos", nets[0].pos[0].clone(), persistent=False)  # [1+F, D]
        self.cls = nn.Parameter(torch.stack([n.cls_token[0] for n in nets]), requires_grad=False)  # [M, 1, D]
        enc: list[Transformer] = [n.encoder for n in nets]
        self.blocks = nn.ModuleList(_StackedBlock([e.blocks[i] for e in enc]) for i in range(len(enc[0].blocks)))
        self.norm = _StackedLayerNorm([e.norm for e in enc])
        fusion = model.fusion
        scale, shift = (torch.stack(v) for v in zip(*(_bn_affine(p[1]) for p in fusion.proj)))  # [M, d] each
        self.proj1 = _StackedLinear([p[0] for p in fusion.proj], scale, shift)
        self.proj2 = _StackedLinear([p[3] for p in fusion.proj])
        self.fusion = fusion

    def frame_features(self, x: Tensor) -> Tensor:
        """x [N, M, E] -> frame features [N, M, F, frame_dim]."""
        n, m, e = x.shape
        xm = x.transpose(0, 1)  # [M, N, E]
        if self.epoch_mode:
            cols = xm.transpose(1, 2)[None]  # [1, M, E, N]: one column per epoch
            maps = [br(cols) for br in self.branches]  # each [1, M*C, L, N]
            feats = torch.cat([torch.matmul(self.pool, mp.reshape(m, -1, mp.shape[2], n)).permute(3, 0, 2, 1)
                               for mp in maps], dim=-1)  # [N, M, F, C * branches]
        else:
            # one column per frame; a frame is `hops` consecutive steps, cut as `hops` shifted
            # views of the epoch's steps (contiguous copies, no gather)
            f, w = self.frame_idx.shape
            steps = xm.reshape(m, n, -1, self.step).permute(0, 3, 1, 2)  # [M, step, N, E/step]
            cols = torch.cat([steps[..., k:k + f] for k in range(self.hops)], dim=1).reshape(1, m, w, n * f)
            feats = torch.cat([br.mean(br(cols)).reshape(m, -1, n, f).permute(2, 0, 3, 1)
                               for br in self.branches], dim=-1)  # [N, M, F, C * branches]
        return self.head2(F.elu(self.head1(feats)))

    def tokens(self, x: Tensor) -> Tensor:
        """x [N, M, E] (absent rows already zero) -> NeuroNet tokens [N, M, F, nn_dim]."""
        tok = self.embed(self.frame_features(x)) + self.pos[1:]
        cls = (self.cls + self.pos[:1]).expand(tok.shape[0], -1, -1, -1)  # [N, M, 1, D]
        h = torch.cat([cls, tok], dim=2)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)[:, :, 1:]

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        x = torch.where(present[:, :, None], x, 0.0)  # a scalar: no zeros tensor expanded in the graph
        tok = self.tokens(x)
        tok = torch.where(present[:, :, None, None], tok, 0.0)
        u = self.proj2(F.elu(self.proj1(tok))) + self.fusion.modality_token[:, None] + self.fusion.pos
        fused = self.fusion.encode(u, present, None)
        return self.fusion.present_mean(fused, present, self.cfg.n_frames)
