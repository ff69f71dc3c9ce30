"""Per-epoch classification heads: sleep stage (5-way), apnea and hypopnea (binary logits)."""

from __future__ import annotations

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
    """h [N, d] -> (stage_logits [N, n_stages], apnea_logit [N], hypopnea_logit [N])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        self.stage = mlp_head(d, cfg.head_hidden, cfg.n_stages, cfg.head_dropout)
        self.apnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.hypopnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.stage(h), self.apnea(h)[:, 0], self.hypopnea(h)[:, 0]
