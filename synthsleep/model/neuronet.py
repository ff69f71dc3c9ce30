"""NeuroNet: unimodal self-supervised epoch encoder (one instance per modality).

Pretraining (Lee et al. 2024): the frame backbone turns an epoch into F=27 frame features;
two independent random maskings (ratio 0.8: 5 of 27 frames kept) of the same epoch go through
the transformer encoder (CLS + visible tokens + fixed sin-cos positions); a light decoder
reconstructs the masked frame features (MSE on masked tokens only); the two views' CLS
projections are pulled together with NT-Xent (temperature 0.05).

The MAE target is the frame-backbone features **detached** (and, with ``nn_norm_target``,
layer-normed per token without affine). Detaching prevents the trivial solution where the
backbone collapses its features to make reconstruction easy; the backbone is trained through
the encoder path (reconstruction of its own visible tokens' context) and the contrastive loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .frame_backbone import FrameBackbone
from .layers import Transformer, gather_tokens, n_keep, random_keep, sincos_positions, unmask_tokens
from .losses import masked_mse, nt_xent


class NeuroNet(nn.Module):
    """Per-modality encoder. ``encode(x [N, 3000]) -> (tokens [N, F, nn_dim], cls [N, nn_dim])``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.n_frames
        self.backbone = FrameBackbone(cfg)
        self.embed = nn.Linear(cfg.frame_dim, cfg.nn_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.nn_dim))
        self.register_buffer("pos", sincos_positions(f + 1, cfg.nn_dim)[None], persistent=False)
        self.encoder = Transformer(cfg.nn_dim, cfg.nn_depth, cfg.nn_heads, cfg.nn_mlp_ratio,
                                   cfg.dropout)
        # --- MAE decoder (pretraining only) ---
        self.decoder_embed = nn.Linear(cfg.nn_dim, cfg.nn_decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.nn_decoder_dim))
        self.register_buffer("dec_pos", sincos_positions(f + 1, cfg.nn_decoder_dim)[None],
                             persistent=False)
        self.decoder = Transformer(cfg.nn_decoder_dim, cfg.nn_decoder_depth, cfg.nn_decoder_heads,
                                   cfg.nn_mlp_ratio, cfg.dropout)
        self.decoder_pred = nn.Linear(cfg.nn_decoder_dim, cfg.frame_dim)
        # --- contrastive projector (pretraining only) ---
        self.projector = nn.Sequential(
            nn.Linear(cfg.nn_dim, cfg.nn_proj_hidden), nn.BatchNorm1d(cfg.nn_proj_hidden),
            nn.ELU(), nn.Linear(cfg.nn_proj_hidden, cfg.nn_proj_dim),
        )
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    # ------------------------------------------------------------------ encoder
    def _encode_visible(self, feats: Tensor, keep_idx: Tensor | None) -> Tensor:
        """feats [N, F, frame_dim]; keep_idx [N, K] or None (all) -> latent [N, 1+K, nn_dim]."""
        tok = self.embed(feats) + self.pos[:, 1:]  # [N, F, d]
        if keep_idx is not None:
            tok = gather_tokens(tok, keep_idx)  # [N, K, d]
        cls = (self.cls_token + self.pos[:, :1]).expand(tok.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, tok], dim=1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [N, 3000] -> (frame tokens [N, F, nn_dim], cls [N, nn_dim]); no masking."""
        latent = self._encode_visible(self.backbone(x), None)
        return latent[:, 1:], latent[:, 0]

    # ------------------------------------------------------------------ MAE
    def _decode(self, latent: Tensor, keep_idx: Tensor) -> Tensor:
        """latent [N, 1+K, d], keep_idx [N, K] -> predicted frame features [N, F, frame_dim]."""
        h = self.decoder_embed(latent)  # [N, 1+K, dd]
        full = unmask_tokens(h[:, 1:], keep_idx, self.cfg.n_frames, self.mask_token)  # [N, F, dd]
        h = torch.cat([h[:, :1], full], dim=1) + self.dec_pos
        return self.decoder_pred(self.decoder(h)[:, 1:])

    def target(self, feats: Tensor) -> Tensor:
        """MAE target from frame features [N, F, frame_dim]: detached (+ per-token layer norm)."""
        t = feats.detach()
        return F.layer_norm(t, t.shape[-1:]) if self.cfg.nn_norm_target else t

    def forward_mae(self, feats: Tensor, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """One masked view. Returns (cls [N, d], pred [N, F, frame_dim], masked bool [N, F])."""
        n, f, _ = feats.shape
        keep_idx, masked = random_keep(n, f, n_keep(f, self.cfg.nn_mask_ratio), feats.device,
                                       generator)
        latent = self._encode_visible(feats, keep_idx)
        return latent[:, 0], self._decode(latent, keep_idx), masked

    def pretrain_loss(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """x [N, 3000] (N >= 2) -> {loss, recon, contrastive} (scalars).

        Two independent maskings of the same epochs; recon = mean over views of the MSE on
        masked tokens; contrastive = NT-Xent(projector(cls_view1), projector(cls_view2)).
        """
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"NeuroNet.pretrain_loss needs x [N>=2, {self.cfg.epoch_samples}], "
                             f"got {tuple(x.shape)}")
        feats = self.backbone(x)
        tgt = self.target(feats)
        cls1, pred1, m1 = self.forward_mae(feats, generator)
        cls2, pred2, m2 = self.forward_mae(feats, generator)
        recon = 0.5 * (masked_mse(pred1, tgt, m1) + masked_mse(pred2, tgt, m2))
        contrastive = nt_xent(self.projector(cls1), self.projector(cls2), self.cfg.nn_temperature)
        return {"loss": recon + contrastive, "recon": recon, "contrastive": contrastive}
