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

    With ``cfg.eeg_stage_head`` the epochs whose only present modality is EEG take their stage logits from
    ``stage_eeg`` instead of the shared ``stage`` MLP: one Linear on [h, side] [d + N_SIDE] ->
    [n_stages], where side [N, N_SIDE] are the epoch's EEG side features (absolute log band
    powers and the running log scale, ``psg.side_features``), which the normalised input hides,
    and their moving averages over the past epochs.
    With ``cfg.montage_stage_head`` every other epoch with an EEG takes them from ``stage_montage``,
    one Linear on [h, side, present as 0/1] [d + N_SIDE + M]; epochs without an EEG, and epochs
    whose side features are unknown (NaN, or no ``side`` given), keep the shared head.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.fusion_dim
        #: row of the EEG in ``present`` (-1: the model reads no EEG, so no epoch is EEG alone)
        self.eeg_row = cfg.modalities.index("eeg") if "eeg" in cfg.modalities else -1
        self.stage = mlp_head(d, cfg.head_hidden, cfg.n_stages, cfg.head_dropout)
        self.apnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.hypopnea = mlp_head(d, cfg.head_hidden, 1, cfg.head_dropout)
        self.stage_eeg = nn.Linear(d + N_SIDE, cfg.n_stages) if cfg.eeg_stage_head else None
        self.stage_montage = (nn.Linear(d + N_SIDE + cfg.n_modalities, cfg.n_stages)
                              if cfg.montage_stage_head else None)

    def has_eeg(self, present: Tensor) -> Tensor:
        """present bool [N, M] -> bool [N]: the epoch's EEG is present."""
        return present[:, self.eeg_row] if self.eeg_row >= 0 else torch.zeros_like(present[:, 0])

    def forward(self, h: Tensor, present: Tensor | None = None, side: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """h [N, d]; present bool [N, M], the sensor set of each epoch (None: the shared heads);
        side float [N, N_SIDE] (None, or a row with a NaN: unknown, the shared head reads it)."""
        stage = self.stage(h)
        if present is None or side is None or (self.stage_eeg is None and self.stage_montage is None):
            return stage, self.apnea(h)[:, 0], self.hypopnea(h)[:, 0]
        known = torch.isfinite(side).all(-1)
        s = torch.where(known[:, None], side, torch.zeros_like(side)).to(h.dtype)
        with_eeg = self.has_eeg(present)
        alone = with_eeg & (present.to(torch.int32).sum(-1) == 1)
        if self.stage_montage is not None:  # with the EEG and something more (it was fitted on those)
            readout = self.stage_montage(torch.cat([h, s, present.to(h.dtype)], -1))
            stage = torch.where((with_eeg & ~alone & known)[:, None], readout, stage)
        if self.stage_eeg is not None:
            stage = torch.where((alone & known)[:, None], self.stage_eeg(torch.cat([h, s], -1)), stage)
        return stage, self.apnea(h)[:, 0], self.hypopnea(h)[:, 0]
