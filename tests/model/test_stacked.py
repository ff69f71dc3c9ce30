"""``StackedEncoder``: the M per-modality encoders as one stacked network equal ``encode_epochs``."""

from __future__ import annotations

import pytest
import torch

from synthsleep.model import SleepModel
from synthsleep.model.stacked import StackedEncoder


def _trained_looking(model: SleepModel) -> SleepModel:
    """Random weights with BatchNorm statistics and LayerNorm affines away from their identity
    defaults, so folding them into the stacked layers is actually exercised."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.5, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.normal_(1, 0.2, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
            elif isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1, 0.2, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
    return model.eval()


@pytest.mark.parametrize("mode", ["frames", "epoch"])
def test_stacked_encoder_equals_encode_epochs(mode, make_cfg):
    cfg = make_cfg(backbone_channels=[4, 8, 8], nn_depth=2, backbone_mode=mode)
    model = _trained_looking(SleepModel(cfg))
    x = torch.randn(4, cfg.n_modalities, cfg.epoch_samples) * 2
    present = torch.ones(4, cfg.n_modalities, dtype=torch.bool)
    present[1, 0] = False  # no EEG
    present[2, 3:] = False  # core modalities only
    present[3] = False  # nothing at all: the no-signal token
    stacked = StackedEncoder(model)
    with torch.no_grad():
        want = model.encode_epochs(x, present)
        got = stacked(x, present)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # a modality's weights reach only its own rows: change the EOG encoder, EEG-only rows stay
    with torch.no_grad():
        for p in model.encoders["eog"].parameters():
            p.add_(0.5)
        changed = StackedEncoder(model)(x, present)
    assert not torch.allclose(changed[0], got[0])
    eeg_only = present.clone()
    eeg_only[:, 1:] = False
    with torch.no_grad():
        torch.testing.assert_close(StackedEncoder(model)(x, eeg_only), model.encode_epochs(x, eeg_only),
                                   rtol=1e-4, atol=1e-5)
