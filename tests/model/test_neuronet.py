"""Frame backbone framing, NeuroNet MAE masking and pretraining loss."""

import torch

from synthsleep.model import FrameBackbone, NeuroNet, masked_mse


def test_frames_are_4s_windows_with_1s_step(tiny_cfg):
    fb = FrameBackbone(tiny_cfg)
    x = torch.arange(2 * 3000, dtype=torch.float32).reshape(2, 3000)
    fr = fb.frames(x)
    assert fr.shape == (2, 27, 400)
    for k in (0, 13, 26):
        assert torch.equal(fr[1, k], x[1, 100 * k: 100 * k + 400])
    assert fb(x).shape == (2, 27, tiny_cfg.frame_dim)


def test_encode_shapes(tiny_cfg):
    nn_ = NeuroNet(tiny_cfg).eval()
    tok, cls = nn_.encode(torch.randn(3, 3000))
    assert tok.shape == (3, 27, tiny_cfg.nn_dim) and cls.shape == (3, tiny_cfg.nn_dim)


def test_mae_masks_80_percent_and_scores_only_masked(tiny_cfg):
    net = NeuroNet(tiny_cfg).eval()
    feats = net.backbone(torch.randn(4, 3000))
    g = torch.Generator().manual_seed(1)
    cls, pred, masked = net.forward_mae(feats, g)
    assert masked.shape == (4, 27) and (masked.sum(1) == 22).all()  # 5 of 27 kept
    target = net.target(feats)
    assert not target.requires_grad  # target is detached
    loss = masked_mse(pred, target, masked)
    t2 = target.clone()
    t2[~masked] = 1e3  # changing unmasked targets leaves the loss unchanged
    assert torch.equal(masked_mse(pred, t2, masked), loss)
    t3 = target.clone()
    t3[masked] += 1.0
    assert masked_mse(pred, t3, masked) > loss + 0.1


def test_visible_tokens_are_the_kept_ones(tiny_cfg):
    """The encoder sees exactly the unmasked frames: changing a masked frame's feature changes
    nothing in the CLS output; changing a kept one does."""
    net = NeuroNet(tiny_cfg).eval()
    feats = torch.randn(1, 27, tiny_cfg.frame_dim)
    cls, _, masked = net.forward_mae(feats, torch.Generator().manual_seed(3))
    i_masked = int(masked[0].nonzero()[0])
    i_kept = int((~masked[0]).nonzero()[0])
    f2 = feats.clone()
    f2[0, i_masked] += 5
    cls2, _, _ = net.forward_mae(f2, torch.Generator().manual_seed(3))
    torch.testing.assert_close(cls2, cls)
    f3 = feats.clone()
    f3[0, i_kept] += 5
    cls3, _, _ = net.forward_mae(f3, torch.Generator().manual_seed(3))
    assert (cls3 - cls).abs().max() > 1e-3


def test_pretrain_loss_finite_and_trains_backbone(tiny_cfg):
    net = NeuroNet(tiny_cfg).train()
    out = net.pretrain_loss(torch.randn(6, 3000))
    assert set(out) == {"loss", "recon", "contrastive"}
    assert all(torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss"], out["recon"] + out["contrastive"])
    out["loss"].backward()
    g = net.backbone.branches[0].stem[0].weight.grad
    assert g is not None and g.abs().sum() > 0
