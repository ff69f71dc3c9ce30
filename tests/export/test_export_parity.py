"""ORT step == PyTorch step over a sequence with the state carried; dynamic batch; state I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_fixtures import PROVENANCE, THRESHOLDS

from synthsleep.export.runtime import RuntimeInputError, StepRuntime, StepState
from synthsleep.export.verify import random_epochs, verify_artifact
from synthsleep.psg.side_features import N_EPOCH_SIDE

#: largest absolute difference allowed between ORT and PyTorch (probabilities and states)
ATOL = 1e-5


def torch_step(model, x, present, state, side):
    with torch.no_grad():
        return model.step(torch.from_numpy(x), torch.from_numpy(present), *state, torch.from_numpy(side))


@pytest.mark.parametrize("batch", [2, 1, 3])
def test_ort_equals_torch_over_20_steps(tiny, artifact, batch):
    """Exported with batch 2; run with 1, 2 and 3 beds, 20 steps, each side carrying its state."""
    model, cfg = tiny
    rt = StepRuntime(artifact, providers="cpu", threads=1)
    state = rt.new_state(batch)
    assert state.conv_state.shape[1] == batch
    tstate = (torch.zeros(state.conv_state.shape), torch.zeros(state.ssm_state.shape))
    worst = 0.0
    for x, present, side in random_epochs(cfg.n_modalities, 20, batch, seed=batch):
        graph_side, _ = rt.side_input(side, present, state.side_context)  # the epoch's features and their context
        out, state = rt.step(x, present, state, side)
        ref = torch_step(model, x, present, tstate, graph_side)
        tstate = (ref[3], ref[4])
        got = (out.stage_prob, out.apnea_prob, out.hypopnea_prob, state.conv_state, state.ssm_state)
        for a, b in zip(got, ref):
            assert a.shape == tuple(b.shape)
            worst = max(worst, float(np.abs(a - b.numpy()).max()))
        assert out.stage_prob.shape == (batch, 5) and out.apnea_prob.shape == (batch,)
    assert worst < ATOL
    # the state is really carried: it is far from zero after 20 steps
    assert np.abs(state.ssm_state).max() > 1e-2


def test_state_matters_and_a_copied_state_resumes_exactly(tiny, artifact):
    model, cfg = tiny
    rt = StepRuntime(artifact, providers="cpu")
    seq = list(random_epochs(cfg.n_modalities, 6, 1, seed=7))
    state = rt.new_state(1)
    for x, p, sd in seq[:3]:
        _, state = rt.step(x, p, state, sd)
    loaded = StepState(state.conv_state.copy(), state.ssm_state.copy(), state.side_context.copy())  # as the monitor restores it
    a, b = state, loaded
    for x, p, sd in seq[3:]:
        oa, a = rt.step(x, p, a, sd)
        ob, b = rt.step(x, p, b, sd)
        np.testing.assert_array_equal(oa.stage_prob, ob.stage_prob)
    x3, p3, s3 = seq[3]
    fresh, _ = rt.step(x3, p3, rt.new_state(1), s3)
    carried, _ = rt.step(x3, p3, loaded, s3)
    assert np.abs(fresh.stage_prob - carried.stage_prob).max() > 1e-6  # history changes the output
    # bed grouping and selection
    two = StepState.concatenate([state, rt.new_state(1)])
    assert two.batch == 2
    np.testing.assert_array_equal(two.take(0).ssm_state, state.ssm_state)
    np.testing.assert_array_equal(two.take(0).side_context, state.side_context)
    assert state.side_context[0, -1] > 0 and not two.take(1).ssm_state.any() and not two.take(1).side_context.any()


def test_bad_inputs_are_named(artifact):
    rt = StepRuntime(artifact, providers="cpu")
    st = rt.new_state(2)
    x = np.zeros((2, 3, 3000), np.float32)
    p = np.ones((2, 3), bool)
    with pytest.raises(RuntimeInputError, match=r"\[B, 3, 3000\]"):
        rt.step(np.zeros((2, 4, 3000), np.float32), p, st)
    with pytest.raises(RuntimeInputError, match="conv_state"):
        rt.step(x, p, rt.new_state(3))
    bad = x.copy()
    bad[1, 2, 5] = np.nan
    with pytest.raises(RuntimeInputError, match="'emg' is present but holds NaN"):
        rt.step(bad, p, st)
    p2 = p.copy()
    p2[1, 2] = False  # absent: its samples are ignored, NaN or not
    out, _ = rt.step(bad, p2, st)
    ref, _ = rt.step(np.zeros_like(bad), p2, st)
    assert np.isfinite(out.stage_prob).all()
    np.testing.assert_array_equal(out.stage_prob, ref.stage_prob)


def test_verify_report(tiny, artifact):
    model, _ = tiny
    report = verify_artifact(artifact, model=model, steps=20, batch=2)
    assert report.ok, report.summary()
    assert set(report.max_abs_diff) == {"stage_prob", "apnea_prob", "hypopnea_prob", "conv_state_out",
                                        "ssm_state_out"}
    assert max(report.max_abs_diff.values()) < ATOL
    assert report.ort_step_seconds and report.torch_step_seconds
    assert "RESULT: ok" in report.summary()


def test_verify_on_real_epochs_from_an_edf(tiny, artifact, tmp_path):
    """Preprocessed epochs of a (synthetic) EDF night through both sides, state carried."""
    from synthsleep.export.verify import edf_epochs
    from synthsleep.psg.synthetic import synthesize_night, write_night

    edf = write_night(synthesize_night(1, 0.05), tmp_path / "night.edf")  # 3 minutes
    rt = StepRuntime(artifact, providers="cpu")
    seq = edf_epochs(edf, rt, steps=4)
    assert len(seq) == 4
    for x, present, side in seq:
        assert x.shape == (1, 3, 3000) and present.all()  # eeg, eog, emg found and usable
        assert 0.1 < float(x.std()) < 10.0  # normalised signal, not zeros
        assert side.shape == (1, N_EPOCH_SIDE) and np.isfinite(side).all() and side[0, -1] > 1.0  # ln uV scale of the EEG
    model, _ = tiny
    report = verify_artifact(artifact, model=model, steps=4, batch=1, edf=edf)
    assert report.ok, report.summary()
    assert str(edf) in report.sources[-1]


def test_inputs_from_epochs_picks_rows_by_name(artifact):
    from synthsleep.psg.epoch import Epoch

    rt = StepRuntime(artifact, providers="cpu")  # reads eeg, eog, emg
    rng = np.random.default_rng(0)
    a = Epoch(0, 0.0, ("emg", "eeg", "ecg"), rng.standard_normal((3, 3000)).astype(np.float32),
              np.zeros(3, np.uint8), np.array([True, True, True]), np.array([1.0, 2.5, 0.0], np.float32))
    b = Epoch(0, 0.0, ("eeg", "eog", "emg"), rng.standard_normal((3, 3000)).astype(np.float32),
              np.array([0, 2, 0], np.uint8), np.array([True, False, True]), np.zeros(3, np.float32))
    x, present, side = rt.inputs_from_epochs([a, b])
    assert present.tolist() == [[True, False, True], [True, False, True]]  # a lacks eog; b's eog is flat
    np.testing.assert_array_equal(x[0, 0], a.data[1])  # eeg row of a
    np.testing.assert_array_equal(x[0, 2], a.data[0])  # emg row of a
    assert not x[0, 1].any() and not x[1, 1].any()
    assert side[0, -1] == np.float32(2.5) and side[1, -1] == 0.0  # the EEG's log scale, by name
    out, state = rt.step(x, present, rt.new_state(2), side)
    assert out.stage.shape == (2,) and state.batch == 2


def test_the_stacked_export_is_the_same_step_with_fewer_nodes(tiny, artifact, tmp_path):
    """The session artifact is stacked (``small``'s ``export_stacked``); ``stacked=False`` writes
    the per-modality encoders one after another: more nodes, the same step to float rounding."""
    import onnx

    from synthsleep.export.onnx_export import export_step

    model, cfg = tiny
    assert cfg.export_stacked
    plain = export_step(model, cfg, tmp_path / "plain.onnx", PROVENANCE, None, THRESHOLDS,
                        exporter="torchscript", split=False, stacked=False).path
    n_nodes = lambda p: len(onnx.load(str(p)).graph.node)  # noqa: E731
    assert n_nodes(artifact) < 0.6 * n_nodes(plain)
    a, b = StepRuntime(artifact, threads=1), StepRuntime(plain, threads=1)
    sa, sb = a.new_state(2), b.new_state(2)
    for x, present, side in random_epochs(cfg.n_modalities, 5, 2, seed=7):
        oa, sa = a.step(x, present, sa, side)
        ob, sb = b.step(x, present, sb, side)
        np.testing.assert_allclose(oa.stage_prob, ob.stage_prob, atol=ATOL)
        np.testing.assert_allclose(sa.ssm_state, sb.ssm_state, atol=ATOL)
