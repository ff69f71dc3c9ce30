"""Metrics against values computed by hand; evaluate_predictions and its plots/report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from synthsleep.offline_training import metrics as M
from synthsleep.offline_training.evaluate import (
    NightPredictions,
    NightTruth,
    evaluate_predictions,
    write_report,
)
from synthsleep.offline_training.plots import plot_confusion, plot_hypnogram

# true  0 0 1 1 2 (-1 dropped);  pred 0 1 1 1 0
T = np.array([0, 0, 1, 1, 2, -1])
P = np.array([0, 1, 1, 1, 0, 3])


def test_confusion_accuracy_f1_kappa_by_hand() -> None:
    cm = M.confusion_matrix(T, P)
    want = np.zeros((5, 5), int)
    want[0, 0], want[0, 1], want[1, 1], want[2, 0] = 1, 1, 2, 1
    assert (cm == want).all()
    assert M.accuracy(T, P) == pytest.approx(3 / 5)
    f1 = M.per_class_f1(cm)
    # W: tp 1, fp 1, fn 1 -> 2/4; N1: tp 2, fp 1 -> 4/5; N2: 0; N3/REM never seen -> nan
    assert f1[:3] == pytest.approx([0.5, 0.8, 0.0])
    assert math.isnan(f1[3]) and math.isnan(f1[4])
    assert M.macro_f1(cm) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # p_o = 0.6, p_e = (2*2 + 2*3 + 1*0) / 25 = 0.4 -> kappa = 0.2 / 0.6
    assert M.cohen_kappa(cm) == pytest.approx(1 / 3)
    assert M.cohen_kappa(M.confusion_matrix([0, 1, 2], [0, 1, 2])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="y_pred"):
        M.accuracy([0, 1], [0])


def test_binary_f1_auroc_auprc_by_hand() -> None:
    assert M.binary_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(4 / 6)  # tp 2, fp 1, fn 1
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3/4
    assert M.roc_auc(y, s) == pytest.approx(0.75)
    # ranked 0.8+ 0.4- 0.35+ 0.1-: AP = 1.0 * 0.5 + (2/3) * 0.5
    assert M.average_precision(y, s) == pytest.approx(1 / 2 + 1 / 3)
    assert M.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert M.average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert M.roc_auc([0, 1, -1], [0.2, 0.9, 0.0]) == pytest.approx(1.0)  # -1 dropped
    assert math.isnan(M.roc_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(M.average_precision([0, 0], [0.1, 0.2]))
    b = M.binary_metrics(y, s, threshold=0.38)  # preds 0 1 0 1
    assert b["f1"] == pytest.approx(0.5) and b["positives"] == 2 and b["n"] == 4


def test_ahi_runs_and_agreement_by_hand() -> None:
    assert M.count_runs([0, 1, 1, 0, 1, 0, 0, 1]) == 3
    assert M.count_runs([]) == 0
    stages = np.array([0] * 20 + [2] * 120)  # 1 h of sleep (and 10 min wake)
    ap = np.zeros(140, int)
    ap[[30, 31, 32, 50, 90]] = 1  # 3 runs
    hy = np.zeros(140, int)
    hy[[60, 61, 100]] = 1  # 2 runs
    assert M.predicted_ahi(ap, hy, stages) == pytest.approx(5.0)
    events = [{"type": "obstructive_apnea"}, {"type": "hypopnea"}, {"type": "desaturation"},
              {"type": "central_apnea"}, {"type": "arousal"}]
    assert M.true_ahi(events, stages) == pytest.approx(3.0)
    assert math.isnan(M.true_ahi(events, np.zeros(10, int)))
    # x 1 2 3, y 2 4 7: sum dxdy 5, sxx 2, syy 114/9
    assert M.pearson_r([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    ag = M.ahi_agreement([1.0, 2.0, math.nan], [2.0, 4.0, 3.0])
    assert ag["nights"] == 2 and ag["mae"] == pytest.approx(1.5)


def _onehot(st: np.ndarray) -> np.ndarray:
    p = np.full((st.size, 5), 0.01)
    p[np.arange(st.size), st] = 0.96
    return p


def test_evaluate_predictions_and_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    st = rng.integers(0, 5, 240)
    st[:10] = -1
    ap = (rng.random(240) < 0.1).astype(int)
    hy = (rng.random(240) < 0.1).astype(int)
    truth = NightTruth("n1", st, ap, hy, [{"type": "hypopnea", "onset": 0.0, "duration": 10.0}], "S1")
    perfect = NightPredictions("n1", _onehot(np.maximum(st, 0)), ap * 0.9, hy * 0.8)
    rep = evaluate_predictions([perfect], [truth])
    assert rep["epochs"] == 240 and rep["staging"]["n"] == 230
    assert rep["staging"]["accuracy"] == 1.0 and rep["staging"]["kappa"] == pytest.approx(1.0)
    assert rep["apnea"]["auroc"] == 1.0 and rep["hypopnea"]["f1"] == 1.0
    night = rep["ahi"]["per_night"][0]
    hours = np.count_nonzero(st >= 1) / 120
    assert night["ahi_true"] == pytest.approx(1 / hours)
    with pytest.raises(ValueError, match="n1"):
        evaluate_predictions([NightPredictions("n1", _onehot(np.zeros(5, int)), np.zeros(5), np.zeros(5))], [truth])
    path = write_report({"carried": rep}, tmp_path)
    back = json.loads(path.read_text())
    assert back["carried"]["staging"]["accuracy"] == 1.0
    assert back["carried"]["ahi"]["pearson_r"] is None  # one night: undefined -> null, not NaN
    png = plot_confusion(rep["staging"]["confusion"], tmp_path / "cm.png")
    hyp = plot_hypnogram(st, {"model": perfect.stage}, tmp_path / "hyp.png", "n1")
    for p in (png, hyp):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_evaluate_cli_with_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real (random) small SleepModel checkpoint over a real shard folder, both modes."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from test_shards import make_shards

    from synthsleep.cli import main
    from synthsleep.model import SleepModel, load_config, save_model
    from synthsleep.offline_training.evaluate import TorchPredictor

    shards = make_shards(tmp_path / "shards", {"a": ("A", 26), "b": ("B", 9), "c": ("C", 5)},
                         split={"train": ["C"], "val": [], "test": ["A", "B"]})
    torch.manual_seed(0)
    cfg = load_config("small", {"modalities": ("eeg", "eog", "emg", "ecg")})
    save_model(SleepModel(cfg).eval(), cfg, tmp_path / "ckpt" / "model")
    pred = TorchPredictor(tmp_path / "ckpt" / "model", chunk=7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((26, 4, 3000)).astype(np.float32)
    present = np.ones((26, 4), bool)
    present[:, 3] = False
    side = rng.standard_normal((26, 7)).astype(np.float32)
    carried = pred.carried(x, present, side)
    pred.chunk = 64  # chunking must not change the carried result (state passed between chunks)
    whole = pred.carried(x, present, side)
    for a, b in zip(carried, whole):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    win = pred.windows(x, present, side, window=10)
    np.testing.assert_allclose(win[0][:10], whole[0][:10], rtol=1e-4, atol=1e-5)  # first window = carried
    assert not np.allclose(win[0][10:], whole[0][10:], atol=1e-6)  # later windows restart from zero

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(tmp_path / "ckpt"), "--shards", str(shards),  # a run folder
               "--out", str(out), "--window", "10", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "state carried" in text and "kappa" in text
    rep = json.loads((out / "report.json").read_text())
    assert rep["carried"]["nights"] == 2 and rep["carried"]["epochs"] == 35
    assert rep["windows"]["staging"]["n"] == 35
    assert {p.name for p in out.glob("*.png")} == {"confusion_carried.png", "confusion_windows.png", "hypnogram_a.png"}


def test_onnx_predictor_matches_checkpoint(tmp_path: Path) -> None:
    """The ONNX step artifact (StepRuntime) gives the same carried-state outputs as the checkpoint."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.set_num_threads(1)
    from synthsleep.export.onnx_export import export_step
    from synthsleep.model import SleepModel, load_config, save_model
    from synthsleep.offline_training.evaluate import load_predictor

    torch.manual_seed(1)
    cfg = load_config("small", {"modalities": ("eeg", "eog", "emg", "ecg")})
    model = SleepModel(cfg).eval()
    save_model(model, cfg, tmp_path / "model")
    export_step(model, cfg, tmp_path / "model.onnx", {}, None, exporter="torchscript")
    onnx_pred, torch_pred = load_predictor(tmp_path / "model.onnx"), load_predictor(tmp_path / "model")
    assert onnx_pred.modalities == torch_pred.modalities == ("eeg", "eog", "emg", "ecg")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((23, 4, 3000)).astype(np.float32)
    present = rng.random((23, 4)) > 0.2
    present[::3] = False
    present[::3, 0] = True  # EEG alone: the EEG-alone readout and its side features in both
    side = (3.0 + rng.standard_normal((23, 7))).astype(np.float32)
    for mode in ("carried", "windows"):
        args = (x, present, side) if mode == "carried" else (x, present, side, 10)
        a, b = getattr(onnx_pred, mode)(*args), getattr(torch_pred, mode)(*args)
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-4)
