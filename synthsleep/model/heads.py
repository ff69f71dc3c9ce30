"""Per-epoch classification heads: sleep stage (5-way), apnea and hypopnea (binary logits)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..psg.side_features import N_SIDE
from .config import ModelConfig


def mlp_head(d_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    """Linear-BN-ELU-Drop-Linear-BN-ELU-Drop-Linear: [N, d_in] -> [N, n_out]."""
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ELU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ELU(), nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


class Heads(nn.Module):
    """h [N, d] -> (stage_logits [N, n_stages], apnea_logit [N], hypopnea_logit [N]).

    With ``cfg.eeg_stage_head`` the epochs flagged ``eeg_alone`` [N] take their stage logits from
    ``stage_eeg`` instead of the shared ``stage`` MLP: one Linear on [h, side] [d + N_SIDE] ->
    [n_stages], where side [N, N_SIDE] are the epoch's EEG side features (absolute log band
    powers and the running log scale, ``psg.side_features``), which the normalised input hides.
    An epoch without known side features (NaN, or no ``side`` given) keeps the shared head.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        self.stage = mlp_head(d, cfg.head_hidden, cfg.n_stages, cfg.head_dropout)
        self.apnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.hypopnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.stage_eeg = nn.Linear(d + N_SIDE, cfg.n_stages) if cfg.eeg_stage_head else None

    def forward(self, h: Tensor, eeg_alone: Tensor | None = None, side: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """h [N, d]; eeg_alone bool [N] (None: no readout); side float [N, N_SIDE] (None, or a row
        with a NaN: unknown, that epoch is read by the shared head)."""
        stage = self.stage(h)
        if self.stage_eeg is not None and eeg_alone is not None and side is not None:
            known = torch.isfinite(side).all(-1)
            s = torch.where(known[:, None], side, torch.zeros_like(side)).to(h.dtype)
            stage = torch.where((eeg_alone & known)[:, None], self.stage_eeg(torch.cat([h, s], -1)), stage)
        return stage, self.apnea(h)[:, 0], self.hypopnea(h)[:, 0]
