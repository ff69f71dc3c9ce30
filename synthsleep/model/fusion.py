"""SynthSleepNet fusion: cross-modal masked prediction over per-modality NeuroNet tokens.

Shapes: N epochs, M modalities, S = 27 frame tokens per modality, D = nn_dim, d = fusion_dim,
K = tokens kept per modality (S when unmasked, round(0.6 * 27) = 16 at mask ratio 0.4).

    tokens [N, M, S, D] --per-modality Linear-BN-ELU-Linear--> [N, M, S, d]
        + learned modality token [M, d] + fixed sin-cos positions [S, d]
    keep K per modality (independent random masks) -> [N, M, K, d]
    sequence = [no-signal token] + block_0 + ... + block_{M-1}     -> [N, 1 + M*K, d]
    transformer with key padding mask (absent modalities never attended; the no-signal token is
    always attended, so an epoch with every modality absent still gives finite output)
    block m = sequence[:, 1 + m*K : 1 + (m+1)*K]  (its OWN tokens; fixes the released code's
    CLS-offset slicing, defect 2) -> decoder m -> prediction of modality m's D-dim tokens [N, S, D]

Losses: MSE on masked tokens of present modalities; NT-Xent (temperature 0.1) between the mean
fused token and each present modality's mean projected token.
``embed``: no masking, mean of fused tokens over present modalities ([N, d]); the no-signal
token's output where nothing is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .layers import Transformer, gather_tokens, n_keep, random_keep, sincos_positions, unmask_tokens
from .losses import masked_mse, nt_xent


def drop_modalities(present: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Modality dropout: present [N, M] bool -> copy with each True dropped with probability p.

    A row that would lose every modality keeps its original mask (never invents absence of all).
    """
    if p <= 0.0:
        return present
    drop = torch.rand(present.shape, device=present.device, generator=generator) < p
    new = present & ~drop
    return torch.where(new.any(dim=1, keepdim=True), new, present)


def _mlp_proj(d_in: int, d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d), nn.BatchNorm1d(d), nn.ELU(), nn.Linear(d, d))


class ModalityDecoder(nn.Module):
    """Reads one modality's K fused tokens, predicts its S NeuroNet tokens [N, S, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_tokens = cfg.n_frames
        self.embed = nn.Linear(cfg.fusion_dim, cfg.fusion_decoder_dim)
        self.mask_token = nn.Parameter(torch.randn(cfg.fusion_decoder_dim) * 0.02)
        self.register_buffer("pos", sincos_positions(cfg.n_frames, cfg.fusion_decoder_dim)[None],
                             persistent=False)
        self.decoder = Transformer(cfg.fusion_decoder_dim, cfg.fusion_decoder_depth,
                                   cfg.fusion_decoder_heads, cfg.fusion_mlp_ratio, cfg.dropout)
        self.pred = nn.Linear(cfg.fusion_decoder_dim, cfg.nn_dim)

    def forward(self, block: Tensor, keep_idx: Tensor) -> Tensor:
        """block [N, K, d], keep_idx [N, K] -> [N, S, D]."""
        h = unmask_tokens(self.embed(block), keep_idx, self.n_tokens, self.mask_token) + self.pos
        return self.pred(self.decoder(h))


@dataclass
class FusionPass:
    """Result of one masked fusion pass (see Fusion.forward_masked)."""

    fused: Tensor  # [N, 1 + M*K, d] transformer output (index 0: no-signal token)
    pred: Tensor  # [N, M, S, D] per-modality predictions of NeuroNet tokens
    masked: Tensor  # bool [N, M, S], True where a token was hidden from the encoder
    present: Tensor  # bool [N, M] after modality dropout
    projected: Tensor  # [N, M, S, d] projected tokens (pre-fusion, unmasked)
    keep: int  # K


class Fusion(nn.Module):
    """Cross-modal transformer over per-modality NeuroNet tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, d = cfg.n_modalities, cfg.fusion_dim
        self.proj = nn.ModuleList(_mlp_proj(cfg.nn_dim, d) for _ in range(m))
        self.modality_token = nn.Parameter(torch.randn(m, d) * 0.02)
        self.null_token = nn.Parameter(torch.randn(d) * 0.02)  # "no signal" token
        self.register_buffer("pos", sincos_positions(cfg.n_frames, d), persistent=False)
        self.encoder = Transformer(d, cfg.fusion_depth, cfg.fusion_heads, cfg.fusion_mlp_ratio,
                                   cfg.dropout)
        self.decoders = nn.ModuleList(ModalityDecoder(cfg) for _ in range(m))
        self.projector = _mlp_proj(d, d)

    # ------------------------------------------------------------------ helpers
    def _check(self, tokens: Tensor | Sequence[Tensor], present: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor):
            tokens = torch.stack(list(tokens), dim=1)
        if torch.onnx.is_in_onnx_export():
            return tokens
        n, m, s, d = tokens.shape
        cfg = self.cfg
        if (m, s, d) != (cfg.n_modalities, cfg.n_frames, cfg.nn_dim):
            raise ValueError(
                f"fusion expects tokens [N, {cfg.n_modalities}, {cfg.n_frames}, {cfg.nn_dim}] "
                f"(modalities {list(cfg.modalities)}), got {tuple(tokens.shape)}"
            )
        if tuple(present.shape) != (n, m) or present.dtype != torch.bool:
            raise ValueError(f"fusion expects present bool [{n}, {m}], got "
                             f"{present.dtype} {tuple(present.shape)}")
        return tokens

    def project(self, tokens: Tensor, present: Tensor) -> Tensor:
        """tokens [N, M, S, D] -> [N, M, S, d]; absent modalities' inputs are zeroed first.

        In training, each modality's BatchNorm only sees its present rows.
        """
        n, m, s, dd = tokens.shape
        d = self.cfg.fusion_dim
        tokens = torch.where(present[:, :, None, None], tokens, torch.zeros_like(tokens))
        outs = []
        for i, proj in enumerate(self.proj):
            tok = tokens[:, i]  # [N, S, D]
            if self.training:
                idx = present[:, i].nonzero().squeeze(1)
                out = tok.new_zeros(n, s, d)
                if idx.numel() > 0:
                    y = proj(tok.index_select(0, idx).reshape(-1, dd)).reshape(-1, s, d)
                    out = out.index_copy(0, idx, y)
            else:
                out = proj(tok.reshape(n * s, dd)).reshape(n, s, d)
            outs.append(out + self.modality_token[i] + self.pos)
        return torch.stack(outs, dim=1)

    def encode(self, u: Tensor, present: Tensor, keep_idx: Tensor | None) -> Tensor:
        """u [N, M, S, d], keep_idx [N, M, K] or None -> fused [N, 1 + M*K, d]."""
        n, m, s, d = u.shape
        if keep_idx is not None:
            k = keep_idx.shape[-1]
            u = gather_tokens(u.reshape(n * m, s, d), keep_idx.reshape(n * m, k))
        else:
            k = s
        seq = torch.cat([self.null_token.expand(n, 1, d), u.reshape(n, m * k, d)], dim=1)
        key_mask = torch.cat(
            [torch.ones(n, 1, dtype=torch.bool, device=u.device),
             present[:, :, None].expand(n, m, k).reshape(n, m * k)], dim=1)
        return self.encoder(seq, key_mask)

    @staticmethod
    def modality_block(fused: Tensor, m: int, k: int) -> Tensor:
        """Modality m's own K tokens of a fused sequence [N, 1 + M*K, d] -> [N, K, d]."""
        start = 1 + m * k  # position 0 is the no-signal token; no CLS per modality
        return fused[:, start:start + k]

    @staticmethod
    def present_mean(fused: Tensor, present: Tensor, k: int) -> Tensor:
        """Mean of fused modality tokens over present modalities; no-signal token if none.

        fused [N, 1 + M*K, d], present [N, M] -> [N, d].
        """
        n, _, d = fused.shape
        m = present.shape[1]
        tok = fused[:, 1:].reshape(n, m, k, d)
        w = present.to(fused.dtype)  # [N, M]
        total = (tok * w[:, :, None, None]).sum(dim=(1, 2))
        count = w.sum(dim=1) * k
        none = (count == 0).to(fused.dtype)
        return (total + none[:, None] * fused[:, 0]) / (count + none)[:, None]

    # ------------------------------------------------------------------ inference
    def embed(self, tokens: Tensor | Sequence[Tensor], present: Tensor) -> Tensor:
        """Fused epoch embedding, no masking: tokens [N, M, S, D], present [N, M] -> [N, d]."""
        tokens = self._check(tokens, present)
        u = self.project(tokens, present)
        fused = self.encode(u, present, None)
        return self.present_mean(fused, present, self.cfg.n_frames)

    # ------------------------------------------------------------------ pretraining
    def forward_masked(self, tokens: Tensor | Sequence[Tensor], present: Tensor,
                       generator: torch.Generator | None = None,
                       mask_ratio: float | None = None) -> FusionPass:
        """One masked pass (modality dropout applied in training mode)."""
        tokens = self._check(tokens, present)
        cfg = self.cfg
        if self.training:
            present = drop_modalities(present, cfg.modality_dropout, generator)
        n, m, s, _ = tokens.shape
        ratio = cfg.fusion_mask_ratio if mask_ratio is None else mask_ratio
        k = n_keep(s, ratio)
        keep_idx, masked = random_keep(n * m, s, k, tokens.device, generator)
        keep_idx, masked = keep_idx.reshape(n, m, k), masked.reshape(n, m, s)
        u = self.project(tokens, present)
        fused = self.encode(u, present, keep_idx)
        pred = torch.stack(
            [dec(self.modality_block(fused, i, k), keep_idx[:, i])
             for i, dec in enumerate(self.decoders)], dim=1)
        return FusionPass(fused=fused, pred=pred, masked=masked, present=present, projected=u,
                          keep=k)

    def pretrain_loss(self, tokens: Tensor | Sequence[Tensor], present: Tensor,
                      generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """tokens [N, M, S, D] (NeuroNet tokens), present [N, M] -> {loss, recon, contrastive}."""
        tokens = self._check(tokens, present)
        fp = self.forward_masked(tokens, present, generator)
        target = torch.where(present[:, :, None, None], tokens.detach(),
                             torch.zeros_like(tokens))
        scored = fp.masked & fp.present[:, :, None]
        recon = masked_mse(fp.pred, target, scored)
        fused_mean = self.present_mean(fp.fused, fp.present, fp.keep)  # [N, d]
        terms = []
        for i in range(self.cfg.n_modalities):
            sel = fp.present[:, i].nonzero().squeeze(1)
            if sel.numel() < 2:
                continue
            a = self.projector(fused_mean.index_select(0, sel))
            b = self.projector(fp.projected[:, i].mean(dim=1).index_select(0, sel))
            terms.append(nt_xent(a, b, self.cfg.fusion_temperature))
        contrastive = torch.stack(terms).mean() if terms else recon * 0.0
        return {"loss": recon + contrastive, "recon": recon, "contrastive": contrastive}
