"""Loss helpers: NT-Xent, masked MSE, class-weighted CE and BCE with pos_weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Normalised-temperature cross entropy (SimCLR) between paired views.

    Args:
        z1, z2: [N, D] embeddings; row i of z1 and row i of z2 are a positive pair. The other
            2N - 2 rows are negatives of both. N >= 2.
        temperature: softmax temperature (NeuroNet 0.05, SynthSleepNet 0.1).

    Returns:
        Scalar mean loss over the 2N anchors.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two [N, D] tensors of equal shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # [2N, D]
    sim = z @ z.t() / temperature  # [2N, 2N]
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def masked_mse(pred: Tensor, target: Tensor, masked: Tensor) -> Tensor:
    """Mean squared error over masked tokens only.

    Args:
        pred, target: [..., S, D].
        masked: bool [..., S], True where the token was masked (and is scored).

    Returns:
        Scalar: mean over masked tokens of the per-token mean squared error; 0 (with grad) when
        no token is masked.
    """
    per_token = ((pred - target) ** 2).mean(dim=-1)  # [..., S]
    # where(), not a product: an unscored token holding NaN/Inf must not poison the loss
    per_token = torch.where(masked, per_token, torch.zeros_like(per_token))
    return per_token.sum() / masked.sum().clamp_min(1).to(per_token.dtype)


def class_weights(counts: Tensor | list[int], max_weight: float = 10.0) -> Tensor:
    """Inverse-frequency weights normalised to mean 1 (clamped), for weighted CE.

    counts: per-class label counts [C]; a zero count gets ``max_weight``.
    """
    c = torch.as_tensor(counts, dtype=torch.float64)
    w = c.sum() / (len(c) * c.clamp_min(1.0))
    w = w / w[c > 0].mean() if (c > 0).any() else torch.ones_like(w)
    return w.clamp(max=max_weight).float()


def pos_weight(n_pos: int, n_neg: int, max_weight: float = 100.0) -> Tensor:
    """BCE ``pos_weight`` = n_neg / n_pos (clamped to [1, max_weight]) for a rare positive class."""
    return torch.tensor(min(max(n_neg / max(n_pos, 1), 1.0), max_weight), dtype=torch.float32)


def weighted_ce(logits: Tensor, target: Tensor, weight: Tensor | None = None,
                ignore_index: int = -1) -> Tensor:
    """Cross entropy over the last dim of logits [..., C]; target [...] long, -1 ignored.

    Returns 0 (with grad) when every target is ignored.
    """
    c = logits.shape[-1]
    lg = logits.reshape(-1, c)
    tg = target.reshape(-1).long()
    valid = tg != ignore_index
    if not bool(valid.any()):
        return lg.sum() * 0.0
    w = weight.to(lg.device) if weight is not None else None
    return F.cross_entropy(lg[valid], tg[valid], weight=w)


def masked_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None,
               ignore_index: int = -1) -> Tensor:
    """BCE with logits over labels in {0, 1}; ``ignore_index`` (unknown) entries are skipped."""
    lg = logits.reshape(-1)
    tg = target.reshape(-1)
    valid = tg != ignore_index
    if not bool(valid.any()):
        return lg.sum() * 0.0
    pw = pos_weight.to(lg.device) if pos_weight is not None else None
    return F.binary_cross_entropy_with_logits(lg[valid], tg[valid].float(), pos_weight=pw)
