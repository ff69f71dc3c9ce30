"""Per-epoch classification heads: sleep stage (5-way), apnea and hypopnea (binary logits)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

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
    ``stage_eeg`` (Linear [d] -> [n_stages]) instead of the shared ``stage`` MLP.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        self.stage = mlp_head(d, cfg.head_hidden, cfg.n_stages, cfg.head_dropout)
        self.apnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.hypopnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.stage_eeg = nn.Linear(d, cfg.n_stages) if cfg.eeg_stage_head else None

    def forward(self, h: Tensor, eeg_alone: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        stage = self.stage(h)
        if self.stage_eeg is not None and eeg_alone is not None:
            stage = torch.where(eeg_alone[:, None], self.stage_eeg(h), stage)
        return stage, self.apnea(h)[:, 0], self.hypopnea(h)[:, 0]
