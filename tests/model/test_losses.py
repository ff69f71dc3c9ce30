import math

import pytest
import torch

from synthsleep.model import masked_bce, masked_mse, nt_xent, pos_weight, weighted_ce


def test_nt_xent_matches_hand_computed_two_pairs():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 3.0], [0.0, -1.0]])
    t = 0.5
    # unit vectors: a1=(1,0) a2=(0,1) b1=(s,s) b2=(0,-1), s = 1/sqrt(2)
    s = 1 / math.sqrt(2)
    a1, a2, b1, b2 = (1, 0), (0, 1), (s, s), (0, -1)

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1]

    def term(anchor, pos, negs):
        num = math.exp(dot(anchor, pos) / t)
        den = num + sum(math.exp(dot(anchor, n) / t) for n in negs)
        return -math.log(num / den)

    expected = (term(a1, b1, [a2, b2]) + term(a2, b2, [a1, b1])
                + term(b1, a1, [a2, b2]) + term(b2, a2, [a1, b1])) / 4
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_lower_for_aligned_views():
    z = torch.randn(8, 4)
    assert nt_xent(z, z + 0.01 * torch.randn(8, 4), 0.1) < nt_xent(z, torch.randn(8, 4), 0.1)


def test_masked_mse_ignores_unmasked_tokens():
    pred = torch.randn(3, 5, 4)
    target = torch.randn(3, 5, 4)
    masked = torch.zeros(3, 5, dtype=torch.bool)
    masked[:, [1, 3]] = True
    base = masked_mse(pred, target, masked)
    t2 = target.clone()
    t2[:, [0, 2, 4]] = torch.randn(3, 3, 4) * 100
    t2[0, 0] = float("nan")  # even a NaN in an unscored token must not leak
    assert masked_mse(pred, t2, masked).item() == pytest.approx(base.item(), rel=1e-6)
    t3 = target.clone()
    t3[:, 1] += 1.0
    assert masked_mse(pred, t3, masked).item() != pytest.approx(base.item(), rel=1e-3)
    expected = ((pred - target) ** 2).mean(-1)[:, [1, 3]].mean()
    assert base.item() == pytest.approx(expected.item(), rel=1e-6)


def test_weighted_ce_and_bce_skip_unknown_labels():
    logits = torch.randn(4, 5, requires_grad=True)
    target = torch.tensor([0, -1, 4, -1])
    ce = weighted_ce(logits, target, torch.ones(5))
    ref = torch.nn.functional.cross_entropy(logits[[0, 2]], target[[0, 2]])
    assert ce.item() == pytest.approx(ref.item(), rel=1e-6)
    all_unknown = weighted_ce(logits, torch.full((4,), -1))
    all_unknown.backward()
    assert all_unknown.item() == 0.0
    bl = torch.tensor([2.0, -1.0, 0.5])
    bt = torch.tensor([1, -1, 0])
    pw = pos_weight(n_pos=1, n_neg=9)
    assert pw.item() == pytest.approx(9.0)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        bl[[0, 2]], bt[[0, 2]].float(), pos_weight=pw)
    assert masked_bce(bl, bt, pw).item() == pytest.approx(ref.item(), rel=1e-6)
