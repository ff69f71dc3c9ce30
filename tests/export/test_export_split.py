"""The split artifact (encoder graph + temporal step graph) against the single step graph."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from synthsleep.export.artifact import seal
from synthsleep.export.runtime import StepRuntime
from synthsleep.export.split import SplitRuntime, load_split, split_paths
from synthsleep.psg.side_features import N_EPOCH_SIDE


def _inputs(rt: StepRuntime, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = len(rt.modalities)
    x = rng.normal(0, 1, (n, m, 3000)).astype(np.float32)
    present = rng.random((n, m)) > 0.25
    present[:, 0] |= ~present.any(axis=1)
    present[::5] = False
    present[::5, 0] = True  # EEG alone: the epochs the EEG-alone stage readout reads
    side = (2.0 + rng.standard_normal((n, N_EPOCH_SIDE))).astype(np.float32)
    return x, present, side


@pytest.mark.parametrize("which", ["dynamo", "torchscript"])
def test_encoder_then_temporal_equals_step_graph(which, artifact, tiny_artifact):
    path = artifact if which == "dynamo" else tiny_artifact
    assert all(p.is_file() for p in split_paths(path))  # export writes them by default
    rt = StepRuntime(path)
    split = SplitRuntime(rt)
    x, present, side = _inputs(rt, 40)
    emb = split.encode(x, present, batch=16)  # one batch of 16, 16 and 8
    assert emb.shape[0] == 40 and emb.dtype == np.float32
    # the batch size does not change the embedding beyond rounding
    np.testing.assert_allclose(split.encode(x, present, batch=1), emb, atol=1e-5)
    s_step, s_split = rt.new_state(1), rt.new_state(1)
    for i in range(40):
        ref, s_step = rt.step(x[i:i + 1], present[i:i + 1], s_step, side[i:i + 1])
        out, s_split = split.step(emb[i:i + 1], present[i:i + 1], s_split, side[i:i + 1])
        np.testing.assert_allclose(out.stage_prob, ref.stage_prob, atol=1e-5)
        np.testing.assert_allclose(out.apnea_prob, ref.apnea_prob, atol=1e-5)
        np.testing.assert_allclose(out.hypopnea_prob, ref.hypopnea_prob, atol=1e-5)
    np.testing.assert_allclose(s_split.ssm_state, s_step.ssm_state, atol=1e-4)
    np.testing.assert_allclose(s_split.conv_state, s_step.conv_state, atol=1e-5)
    np.testing.assert_array_equal(s_split.side_context, s_step.side_context)
    assert s_step.side_context[0, -1] == present[:, rt.modalities.index("eeg")].sum()  # EEG epochs averaged


def test_temporal_graph_takes_present_even_without_an_eeg_readout(tmp_path):
    """Without the EEG-alone readout nothing reads ``present`` (after the encoder) or ``side`` and
    the TorchScript exporter would drop them: the graphs keep them (their contract), and agree."""
    import onnx
    from export_fixtures import PROVENANCE, THRESHOLDS, tiny_model

    from synthsleep.export.onnx_export import export_step
    from synthsleep.psg.preprocess import PreprocessParams

    model, cfg = tiny_model(eeg_stage_head=False)
    path = tmp_path / "plain.onnx"
    export_step(model, cfg, path, PROVENANCE, PreprocessParams(modalities=tuple(cfg.modalities)), THRESHOLDS,
                exporter="torchscript")
    temporal = onnx.load(str(split_paths(path)[1]))
    assert [i.name for i in temporal.graph.input] == ["embedding", "present", "conv_state", "ssm_state", "side"]
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["x", "present", "conv_state", "ssm_state", "side"]
    rt = StepRuntime(path)
    split = load_split(rt)
    assert split is not None
    x, present, side = _inputs(rt, 6)
    emb = split.encode(x, present)
    s_step, s_split = rt.new_state(1), rt.new_state(1)
    for i in range(6):
        ref, s_step = rt.step(x[i:i + 1], present[i:i + 1], s_step, side[i:i + 1])
        out, s_split = split.step(emb[i:i + 1], present[i:i + 1], s_split, side[i:i + 1])
        np.testing.assert_allclose(out.stage_prob, ref.stage_prob, atol=1e-5)
    with pytest.raises(ValueError, match="present must be bool"):
        split.step(emb[:1], present[:1, :2], s_split)


def test_encoder_checks_inputs_like_the_step(artifact):
    rt = StepRuntime(artifact)
    split = SplitRuntime(rt)
    x, present, _ = _inputs(rt, 2)
    x[1, 0, 5] = np.nan
    present[1, 0] = True
    with pytest.raises(ValueError, match="NaN"):
        split.encode(x, present)
    with pytest.raises(ValueError, match="expects"):
        split.encode(x[:, :, :100], present)


def test_artifact_without_split_graphs_falls_back_with_a_log_line(artifact, tmp_path, caplog):
    alone = tmp_path / "old.onnx"
    shutil.copy(artifact, alone)  # an artifact exported before the split existed
    rt = StepRuntime(alone)
    with caplog.at_level(logging.INFO, logger="synthsleep.export.split"):
        assert load_split(rt) is None
    assert "no split encoder/temporal graphs" in caplog.text


def test_stale_or_tampered_split_graphs_are_not_used(artifact, tmp_path, caplog):
    import onnx

    step = tmp_path / "m.onnx"
    shutil.copy(artifact, step)
    for src, dst in zip(split_paths(artifact), split_paths(step)):
        shutil.copy(src, dst)
    assert load_split(StepRuntime(step)) is not None
    enc, _ = split_paths(step)
    proto = onnx.load(str(enc))
    for p in proto.metadata_props:
        if p.key == "step_hash":
            p.value = "sha256:" + "0" * 64  # cut from another model
    seal(proto)
    onnx.save(proto, str(enc))
    with caplog.at_level(logging.WARNING, logger="synthsleep.export.split"):
        assert load_split(StepRuntime(step)) is None
    assert "stale" in caplog.text
    enc.write_bytes(enc.read_bytes()[:-10])  # truncated
    assert load_split(StepRuntime(step)) is None


def test_score_split_equals_step_by_step(tiny_artifact, synthetic_edf):
    from synthsleep.score import score_recording

    rt = StepRuntime(tiny_artifact)
    a, ev_a, _ = score_recording(synthetic_edf, rt, split=True, batch=7)
    b, ev_b, _ = score_recording(synthetic_edf, rt, split=False)
    np.testing.assert_allclose(np.stack([s.stage_prob for s in a]), np.stack([s.stage_prob for s in b]), atol=1e-5)
    np.testing.assert_allclose([s.apnea_prob for s in a], [s.apnea_prob for s in b], atol=1e-5)
    assert [s.stage for s in a] == [s.stage for s in b]
    assert [(e.epoch_index, e.type) for e in ev_a] == [(e.epoch_index, e.type) for e in ev_b]


def test_encoder_batches_on_several_threads_are_exact(tiny_artifact, synthetic_edf):
    """``threads`` runs encoder batches concurrently, each on one ORT thread: the embeddings are
    the same bits as on one thread, and so is a scored night (the scorer hands each thread a batch)."""
    from synthsleep.score import score_recording

    rt = StepRuntime(tiny_artifact)
    one, three = SplitRuntime(rt, threads=1), SplitRuntime(rt, threads=3)
    x, present, _ = _inputs(rt, 40)
    np.testing.assert_array_equal(three.encode(x, present, batch=6), one.encode(x, present, batch=6))
    a, _, _ = score_recording(synthetic_edf, rt, split=three, batch=5)
    b, _, _ = score_recording(synthetic_edf, rt, split=one, batch=5)
    np.testing.assert_array_equal(np.stack([s.stage_prob for s in a]), np.stack([s.stage_prob for s in b]))
