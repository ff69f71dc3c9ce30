"""``backbone_mode = "epoch"``: the backbone once over the epoch, pooled into the 27 frames."""

from __future__ import annotations

import pytest
import torch

from synthsleep.model import ConfigError, SleepModel, load_config
from synthsleep.model.frame_backbone import FrameBackbone, feature_length, frame_pool_matrix


@pytest.mark.parametrize("name", ["small", "paper"])
def test_pool_matrix_covers_each_frame_window(name):
    cfg = load_config(name, {"backbone_mode": "epoch"})
    p = frame_pool_matrix(cfg)
    n_pos = feature_length(cfg.epoch_samples, cfg)
    assert p.shape == (cfg.n_frames, n_pos) == (27, {"small": 24, "paper": 94}[name])
    torch.testing.assert_close(p.sum(1), torch.ones(27))
    span = cfg.epoch_samples / n_pos
    for f in (0, 13, 26):  # weights only on positions overlapping the frame's 4-s window
        lo, hi = f * cfg.frame_step, f * cfg.frame_step + cfg.frame_samples
        used = p[f].nonzero().squeeze(1)
        assert all((i * span < hi) and ((i + 1) * span > lo) for i in used.tolist())


def test_epoch_mode_feature_map_length_and_output_shape(make_cfg):
    cfg = make_cfg(backbone_mode="epoch")
    fb = FrameBackbone(cfg).eval()
    x = torch.randn(3, 3000)
    assert fb.branches[0].feature_map(x[:, None]).shape[-1] == feature_length(3000, cfg)
    assert fb(x).shape == FrameBackbone(make_cfg()).eval()(x).shape == (3, 27, cfg.frame_dim)
    # a frame's features depend on its own stretch of the epoch first: changing the last second
    # changes the last frames more than the first
    y0 = fb(x)
    x2 = x.clone()
    x2[:, -100:] += 5.0
    d = (fb(x2) - y0).abs().mean(dim=(0, 2))
    assert d[-1] > d[0]


def test_epoch_mode_model_forward_equals_step_loop(make_cfg):
    cfg = make_cfg(backbone_mode="epoch")
    model = SleepModel(cfg).eval()
    b, t = 2, 5
    x = torch.randn(b, t, cfg.n_modalities, cfg.epoch_samples)
    present = torch.ones(b, t, cfg.n_modalities, dtype=torch.bool)
    with torch.no_grad():
        out, _ = model(x, present)
        conv, ssm = model.allocate_state(b)
        for i in range(t):
            stage, _, _, conv, ssm = model.step(x[:, i], present[:, i], conv, ssm)
            torch.testing.assert_close(stage, torch.softmax(out.stage_logits[:, i], -1), atol=1e-5, rtol=1e-4)


def test_default_is_frames_and_bad_mode_is_named():
    assert load_config("small").backbone_mode == "frames"
    with pytest.raises(ConfigError, match="backbone_mode"):
        load_config("small", {"backbone_mode": "whole"})
