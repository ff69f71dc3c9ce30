"""SleepModel: forward == step loop, chunked state, absent modalities, save/load, configs, ONNX."""

import numpy as np
import pytest
import torch

from synthsleep.model import (
    ConfigError,
    ModelConfig,
    SleepModel,
    StepWrapper,
    load_config,
    load_model,
    save_model,
)
from synthsleep.psg.side_features import N_SIDE

TOL = 1e-4


def _batch(cfg, b=2, t=6):
    x = torch.randn(b, t, cfg.n_modalities, 3000)
    present = torch.ones(b, t, cfg.n_modalities, dtype=torch.bool)
    present[0, t // 2, 1] = present[b - 1, t - 1, 6] = False
    present[b - 1, 0] = False  # an epoch with every sensor off
    present[0, min(1, t - 1), 1:] = False  # EEG alone: read by the EEG-alone stage readout
    return x, present


def _warm_bn(model, cfg):
    """One training-mode pass so BatchNorm running stats are not the trivial init."""
    model.train()
    with torch.no_grad():
        x, present = _batch(cfg, 2, 4)
        model(x, present)
    model.eval()


def test_forward_equals_step_loop(tiny_cfg):
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    x, present = _batch(tiny_cfg, 2, 7)  # 7 epochs, mamba chunk 4: crosses a chunk boundary
    with torch.no_grad():
        out, (conv, ssm) = model(x, present)
        c, s = model.allocate_state(2)
        for t in range(x.shape[1]):
            sp, ap, hp, c, s = model.step(x[:, t], present[:, t], c, s)
            torch.testing.assert_close(sp, out.stage_logits[:, t].softmax(-1), atol=TOL, rtol=TOL)
            torch.testing.assert_close(ap, out.apnea_logit[:, t].sigmoid(), atol=TOL, rtol=TOL)
            torch.testing.assert_close(hp, out.hypopnea_logit[:, t].sigmoid(), atol=TOL, rtol=TOL)
    torch.testing.assert_close(c, conv, atol=TOL, rtol=TOL)
    torch.testing.assert_close(s, ssm, atol=TOL, rtol=TOL)
    assert torch.isfinite(out.stage_logits).all()


def test_forward_in_chunks_with_state_equals_whole(tiny_cfg):
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    x, present = _batch(tiny_cfg, 1, 9)
    with torch.no_grad():
        whole, st_whole = model(x, present)
        state, parts = None, []
        for sl in (slice(0, 2), slice(2, 7), slice(7, 9)):
            o, state = model(x[:, sl], present[:, sl], state)
            parts.append(o.stage_logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole.stage_logits, atol=TOL, rtol=TOL)
    torch.testing.assert_close(state[1], st_whole[1], atol=TOL, rtol=TOL)


def test_forward_tokens_equals_forward(tiny_cfg):
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    x, present = _batch(tiny_cfg, 2, 3)
    with torch.no_grad():
        ref, _ = model(x, present)
        tok = model.neuronet_tokens(x.reshape(6, 8, 3000), present.reshape(6, 8))
        got, _ = model.forward_tokens(tok.reshape(2, 3, *tok.shape[1:]), present)
    assert torch.equal(ref.stage_logits, got.stage_logits)


def test_training_step_backprops_through_carried_state(tiny_cfg):
    model = SleepModel(tiny_cfg).train()
    x, present = _batch(tiny_cfg, 2, 5)
    out, state = model(x, present)
    state = SleepModel.detach_state(state)
    out2, _ = model(x, present, state)
    loss = out2.stage_logits.logsumexp(-1).mean() + out2.apnea_logit.mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.encoders["eeg"].backbone.branches[0].stem[0].weight.grad.abs().sum() > 0


def test_absent_modality_data_changes_nothing(tiny_cfg):
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    x, present = _batch(tiny_cfg, 2, 6)
    x2 = x.clone()
    x2[~present] = float("nan")  # whatever an absent sensor sends is never read
    with torch.no_grad():
        o1, s1 = model(x, present)
        o2, s2 = model(x2, present)
        o3, _ = model(x2, torch.ones_like(present))
    assert torch.isfinite(o1.stage_logits).all() and torch.isfinite(o1.apnea_logit).all()
    assert torch.equal(o1.stage_logits, o2.stage_logits)
    assert torch.equal(s1[1], s2[1])
    assert not torch.isfinite(o3.stage_logits).all()  # sanity: the NaNs are read when present


def test_step_rejects_bad_shapes_with_clear_message(tiny_cfg):
    model = SleepModel(tiny_cfg).eval()
    c, s = model.allocate_state(1)
    with pytest.raises(ValueError, match="modalities"):
        model.step(torch.zeros(1, 3, 3000), torch.ones(1, 3, dtype=torch.bool), c, s)
    with pytest.raises(ValueError, match="present must be bool"):
        model.step(torch.zeros(1, 8, 3000), torch.ones(1, 8), c, s)


def test_save_load_round_trip(tiny_cfg, tmp_path):
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    st, js = save_model(model, tiny_cfg, tmp_path / "run" / "model", metadata={"commit": "abc"})
    assert st.suffix == ".safetensors" and js.suffix == ".json"
    loaded, cfg2 = load_model(tmp_path / "run" / "model.safetensors")
    assert cfg2 == tiny_cfg
    x, present = _batch(tiny_cfg, 2, 3)
    with torch.no_grad():
        a, _ = model(x, present)
        b, _ = loaded(x, present)
    assert torch.equal(a.stage_logits, b.stage_logits)
    assert torch.equal(a.hypopnea_logit, b.hypopnea_logit)


def test_load_mismatched_weights_is_a_clear_error(tiny_cfg, tmp_path, make_cfg):
    save_model(SleepModel(tiny_cfg), tiny_cfg, tmp_path / "m")
    other = make_cfg(nn_dim=32)
    import json

    doc = json.loads((tmp_path / "m.json").read_text())
    doc["config"] = other.to_dict()
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="do not match"):
        load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_model(tmp_path / "nope")


def test_eeg_alone_epochs_read_their_own_stage_readout(make_cfg):
    cfg = make_cfg()
    assert cfg.eeg_stage_head  # small ships with it
    model = SleepModel(cfg)
    _warm_bn(model, cfg)
    with torch.no_grad():  # a readout that says "N3" exactly when the side feature 0 is high
        model.heads.stage_eeg.weight.zero_()
        model.heads.stage_eeg.weight[3, cfg.fusion_dim] = 10.0
        model.heads.stage_eeg.bias.zero_()
    m = cfg.n_modalities
    x = torch.randn(4, m, 3000)
    present = torch.ones(4, m, dtype=torch.bool)
    present[1, 1:] = False  # EEG alone
    present[2, 2:] = False  # EEG + EOG
    present[3, 0] = present[3, 2:] = False  # EOG alone
    # the same weights without the readout: every epoch reads the shared head
    plain = SleepModel(make_cfg(eeg_stage_head=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "stage_eeg" not in k})
    plain.eval()
    side = torch.full((4, N_SIDE), 3.0)
    with torch.no_grad():
        sp, ap, *_ = model.step(x, present, *model.allocate_state(4), side)
        shared, ap_plain, *_ = plain.step(x, present, *plain.allocate_state(4), side)
        low, *_ = model.step(x, present, *model.allocate_state(4), -side)
        unknown, *_ = model.step(x, present, *model.allocate_state(4), torch.full((4, N_SIDE), float("nan")))
        none, *_ = model.step(x, present, *model.allocate_state(4))
    assert sp[1, 3] > 0.999 and shared[1, 3] < 0.9
    assert low[1, 3] < 1e-6  # the readout reads the side features
    torch.testing.assert_close(sp[[0, 2, 3]], shared[[0, 2, 3]], atol=TOL, rtol=TOL)
    torch.testing.assert_close(ap, ap_plain, atol=TOL, rtol=TOL)  # the readout is for stages only
    # side features unknown (NaN, or not given): the shared head reads every epoch, no NaN out
    torch.testing.assert_close(unknown, shared, atol=TOL, rtol=TOL)
    torch.testing.assert_close(none, shared, atol=TOL, rtol=TOL)
    with pytest.raises(ConfigError, match="eeg_stage_head needs 'eeg'"):
        make_cfg(modalities=["eog", "ecg"])


def test_every_other_sensor_set_reads_the_montage_readout(make_cfg):
    """With ``montage_stage_head`` each epoch that is not EEG alone takes its stage from
    ``stage_montage`` (on [h, side, present]); EEG alone keeps its own readout; unknown side
    features keep the shared head; apnea/hypopnea never change."""
    cfg = make_cfg(montage_stage_head=True)
    model = SleepModel(cfg)
    _warm_bn(model, cfg)
    m = cfg.n_modalities
    with torch.no_grad():  # EEG alone says N3, every other set says N2 unless its EOG is present (REM)
        model.heads.stage_eeg.weight.zero_()
        model.heads.stage_eeg.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 30.0, 0.0]))
        model.heads.stage_montage.weight.zero_()
        model.heads.stage_montage.bias.copy_(torch.tensor([0.0, 0.0, 30.0, 0.0, 0.0]))
        model.heads.stage_montage.weight[4, cfg.fusion_dim + N_SIDE + 1] = 60.0  # present[eog]
    x = torch.randn(4, m, 3000)
    present = torch.ones(4, m, dtype=torch.bool)
    present[1, 1:] = False  # EEG alone
    present[2, 1] = False  # every sensor but the EOG
    present[3, 0] = present[3, 2:] = False  # EOG alone
    plain = SleepModel(make_cfg(eeg_stage_head=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("heads.stage_eeg",
                                                                                            "heads.stage_montage"))})
    plain.eval()
    side = torch.full((4, N_SIDE), 3.0)
    with torch.no_grad():
        sp, ap, *_ = model.step(x, present, *model.allocate_state(4), side)
        shared, ap_plain, *_ = plain.step(x, present, *plain.allocate_state(4), side)
        unknown, *_ = model.step(x, present, *model.allocate_state(4), torch.full((4, N_SIDE), float("nan")))
    assert sp[[0, 1, 2], [4, 3, 2]].min() > 0.999  # full: REM (its EOG), EEG alone: N3, without EOG: N2
    torch.testing.assert_close(sp[3], shared[3], atol=TOL, rtol=TOL)  # no EEG: the shared head
    torch.testing.assert_close(ap, ap_plain, atol=TOL, rtol=TOL)
    torch.testing.assert_close(unknown, shared, atol=TOL, rtol=TOL)


def test_skipping_encoders_of_absent_modalities_changes_nothing(tiny_cfg):
    """In eval mode a modality absent from every row is not encoded: the same embeddings as when
    another row in the batch makes it run."""
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    m = tiny_cfg.n_modalities
    x = torch.randn(4, m, 3000)
    present = torch.zeros(4, m, dtype=torch.bool)
    present[:3, 0] = True  # three EEG-only epochs ...
    present[3] = True  # ... and one with every sensor, so every encoder runs in this batch
    with torch.no_grad():
        alone = model.encode_epochs(x[:3], present[:3])
        mixed = model.encode_epochs(x, present)[:3]
    torch.testing.assert_close(alone, mixed, atol=1e-6, rtol=1e-6)


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="nn_dimm"):
        load_config("small", {"nn_dimm": 3})
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("small", {"nn_dim": "big"})
    with pytest.raises(ConfigError, match="canonical order"):
        load_config("small", {"modalities": ["eog", "eeg"]})
    with pytest.raises(ConfigError, match="unknown model config"):
        load_config("medium")
    bad = tmp_path / "bad.toml"
    bad.write_text("nn_dim = [")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    good = tmp_path / "mine.toml"
    good.write_text('[x]\nnn_dim = 32\nmodalities = ["eeg", "ecg"]\n')
    cfg = load_config(good)
    assert cfg.nn_dim == 32 and cfg.modalities == ("eeg", "ecg") and cfg.name == "mine"


def test_paper_config_sizes_param_count_and_shapes():
    cfg = load_config("paper")
    assert cfg.modalities == ("eeg", "eog", "emg", "ecg", "airflow", "thorax", "abdomen", "spo2")
    assert (cfg.backbone_channels, cfg.backbone_kernels) == ((64, 128, 128, 256), (3, 5, 7))
    assert (cfg.nn_dim, cfg.nn_depth, cfg.nn_heads, cfg.nn_mlp_ratio) == (768, 4, 8, 4.0)
    assert (cfg.nn_decoder_depth, cfg.nn_decoder_dim, cfg.nn_mask_ratio) == (3, 256, 0.8)
    assert (cfg.nn_proj_hidden, cfg.nn_proj_dim, cfg.nn_temperature) == (1024, 512, 0.05)
    assert (cfg.fusion_dim, cfg.fusion_depth, cfg.fusion_heads) == (512, 4, 8)
    assert (cfg.fusion_mask_ratio, cfg.fusion_temperature) == (0.4, 0.1)
    assert (cfg.mamba_d_model, cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_expand,
            cfg.mamba_headdim) == (512, 16, 4, 2, 64)
    with torch.device("meta"):  # no memory, no init cost: shapes and counts only
        model = SleepModel(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    # Mamba2(512, 16, 4, 2, 64): in_proj 512*(2048+32+16), conv 1056*4+1056, 3*16, norm 1024,
    # out_proj 1024*512
    assert sum(p.numel() for p in model.mamba.parameters()) == 1_603_792
    # NeuroNet encoder: 4 blocks * (12 d^2 + 13 d) + final LayerNorm 2 d, d = 768
    assert sum(p.numel() for p in model.encoders["eeg"].encoder.parameters()) == (
        4 * (12 * 768**2 + 13 * 768) + 2 * 768)
    assert n == 330_249_175  # whole model incl. pretraining decoders/projectors
    x = torch.empty(2, 8, 3000, device="meta")
    present = torch.ones(2, 8, dtype=torch.bool, device="meta")
    c, s = model.allocate_state(2, device="meta")
    assert c.shape == (1, 2, 1056, 4) and s.shape == (1, 2, 16, 64, 16)
    sp, ap, hp, c2, s2 = model.step(x, present, c, s)
    assert sp.shape == (2, 5) and ap.shape == (2,) and hp.shape == (2,)
    assert c2.shape == c.shape and s2.shape == s.shape
    assert model.encode_epochs(x, present).shape == (2, 512)


def test_small_config_is_same_architecture_smaller():
    small, paper = load_config("small"), load_config("paper")
    assert isinstance(small, ModelConfig) and small.modalities == paper.modalities
    assert len(small.backbone_channels) == len(paper.backbone_channels)
    assert small.backbone_kernels == paper.backbone_kernels
    assert small.nn_mask_ratio == paper.nn_mask_ratio and small.n_frames == 27
    assert sum(p.numel() for p in SleepModel(small).parameters()) < 3_000_000


def test_onnx_step_export_matches_torch(tiny_cfg, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = SleepModel(tiny_cfg)
    _warm_bn(model, tiny_cfg)
    wrapper = StepWrapper(model).eval()
    x, present = _batch(tiny_cfg, 2, 1)
    x, present = x[:, 0], present[:, 0]
    c, s = model.allocate_state(2)
    path = tmp_path / "step.onnx"
    dyn = {name: {0: "batch"} for name in ("x", "present", "side")}
    dyn.update({"conv_state": {1: "batch"}, "ssm_state": {1: "batch"}})
    dyn.update({n: {0: "batch"} for n in ("stage_prob", "apnea_prob", "hypopnea_prob")})
    dyn.update({"conv_state_out": {1: "batch"}, "ssm_state_out": {1: "batch"}})
    side = torch.randn(2, N_SIDE)
    torch.onnx.export(wrapper, (x, present, c, s, side), str(path), dynamo=False, opset_version=17,
                      input_names=list(StepWrapper.input_names),
                      output_names=list(StepWrapper.output_names), dynamic_axes=dyn)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    # three beds (a batch size not seen at export), two epochs, state fed back; bed 0 EEG alone
    xb, pb = _batch(tiny_cfg, 3, 2)
    pb[0] = False
    pb[0, :, 0] = True
    xb = xb * pb[..., None]
    sides = torch.randn(3, 2, N_SIDE)
    cb, sb = model.allocate_state(3)
    feeds = {"conv_state": cb.numpy(), "ssm_state": sb.numpy()}
    for t in range(2):
        with torch.no_grad():
            ref = model.step(xb[:, t], pb[:, t], cb, sb, sides[:, t])
        cb, sb = ref[3], ref[4]
        got = sess.run(None, {"x": xb[:, t].numpy(), "present": pb[:, t].numpy(), "side": sides[:, t].numpy(),
                              **feeds})
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=1e-4)
        feeds = {"conv_state": got[3], "ssm_state": got[4]}


def test_shipped_config_names_win_over_folders_of_the_same_name(tmp_path, monkeypatch):
    """``load_config("paper")`` in a working directory that holds a folder ``paper`` (a run
    folder, say) loads the shipped config instead of failing on the folder."""
    (tmp_path / "paper").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("paper").name == "paper"
