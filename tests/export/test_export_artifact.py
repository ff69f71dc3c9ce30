"""Artifact metadata round trip, content hash (tamper -> detected), no torch on the live path, CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from export_fixtures import PROVENANCE, THRESHOLDS, TINY, tiny_model

from synthsleep.export.artifact import (
    SCHEMA_VERSION,
    ArtifactError,
    check_artifact,
    compute_content_hash,
    read_artifact,
    seal,
    set_metadata,
)
from synthsleep.export.runtime import StepRuntime

REPO = Path(__file__).resolve().parents[2]


def test_metadata_round_trip(tiny, artifact):
    model, cfg = tiny
    info = check_artifact(artifact)
    assert info.schema_version == SCHEMA_VERSION == 3 and info.hash_ok
    assert info.modalities == ("eeg", "eog", "emg")
    assert info.stage_names == ("W", "N1", "N2", "N3", "REM")
    assert info.thresholds == THRESHOLDS
    assert info.preprocess["modalities"] == ["eeg", "eog", "emg"]
    assert info.preprocess["target_rate"] == 100.0
    # the full preprocessing spec travels with the artifact (issue 10): units, band-pass, normalisation
    spec = info.preprocess["modality_spec"]
    assert set(spec) == {"eeg", "eog", "emg"}
    assert spec["eeg"]["input_unit"] == "uV" and spec["eeg"]["band_hz"] == [0.5, 40.0]
    assert spec["emg"]["band_hz"] == [25.0, 49.0] and "running robust" in spec["eeg"]["normalisation"]
    assert info.provenance["data_fingerprint"] == PROVENANCE["data_fingerprint"]
    assert info.provenance["metrics"] == PROVENANCE["metrics"]
    assert info.provenance["config"] == json.loads(json.dumps(cfg.to_dict()))
    assert info.provenance["git_commit"]
    states = {s.name: s for s in info.states}
    conv, ssm = model.allocate_state(1)
    assert states["conv_state"].shape == (conv.shape[0], -1, *conv.shape[2:])
    assert states["ssm_state"].shape == (ssm.shape[0], -1, *ssm.shape[2:])
    assert info.inputs["present"]["dtype"] == "bool"
    assert info.content_hash.startswith("sha256:") and len(info.content_hash) == 71
    # the graph really has a dynamic batch axis and no external data
    proto = onnx.load(str(artifact))
    x_dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert x_dims[0].dim_param and x_dims[1].dim_value == 3
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    # the artifact and its split graphs (encoder + temporal), no external data files
    assert sorted(p.name for p in artifact.parent.iterdir()) == sorted(
        [artifact.name, artifact.stem + ".encoder.onnx", artifact.stem + ".temporal.onnx"])
    rt = StepRuntime(artifact, providers="cpu")
    assert rt.model_hash == info.content_hash and rt.thresholds == THRESHOLDS
    assert rt.class_names == info.stage_names and rt.modalities == info.modalities
    assert rt.preprocess_params == info.preprocess


def _tamper(src: Path, dst: Path, how: str) -> None:
    proto = onnx.load(str(src))
    if how == "metadata":
        for p in proto.metadata_props:
            if p.key == "thresholds":
                p.value = json.dumps({"apnea": 0.99, "hypopnea": 0.99})
    else:  # nudge one weight
        init = max(proto.graph.initializer, key=lambda i: len(i.raw_data))
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[0] += 1.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(proto, str(dst))


@pytest.mark.parametrize("how", ["metadata", "weights"])
def test_tamper_is_detected(artifact, tmp_path, how):
    bad = tmp_path / "bad.onnx"
    _tamper(artifact, bad, how)
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        read_artifact(bad)
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        StepRuntime(bad, providers="cpu")
    info = read_artifact(bad, verify_hash=False)
    assert not info.hash_ok
    assert compute_content_hash(onnx.load(str(artifact))) == read_artifact(artifact).content_hash


def test_foreign_and_broken_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ArtifactError, match="junk.onnx"):
        read_artifact(junk)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        StepRuntime(tmp_path / "missing.onnx")
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["a"], ["b"])], "g",
                               [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(g), str(plain))
    with pytest.raises(ArtifactError, match="not a synthsleep step artifact"):
        read_artifact(plain)


def test_live_path_imports_no_torch(artifact):
    code = (
        "import sys, numpy as np\n"
        "from synthsleep.export import StepRuntime, read_artifact\n"
        "import synthsleep.export.verify\n"
        "import synthsleep.alerts, synthsleep.alerts.metrics\n"
        f"rt = StepRuntime({str(artifact)!r}, providers='auto')\n"
        "out, st = rt.step(np.zeros((1, 3, 3000), np.float32), np.ones((1, 3), bool), rt.new_state(1))\n"
        "assert out.stage_prob.shape == (1, 5)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print('TORCH' if bad else 'NO_TORCH', bad[:3])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "NO_TORCH" in res.stdout, res.stdout


def test_cli_export_and_verify(tmp_path, capsys):
    from synthsleep.export import onnx_export, verify
    from synthsleep.model import save_model

    model, cfg = tiny_model(seed=3)
    save_model(model, cfg, tmp_path / "ckpt" / "model",
               metadata={"data_fingerprint": "sha256:0123", "thresholds": {"apnea": 0.3}})
    p = argparse.ArgumentParser()
    onnx_export.add_arguments(p)
    out = tmp_path / "m.onnx"
    args = p.parse_args([str(tmp_path / "ckpt" / "model"), "--out", str(out), "--exporter", "torchscript",
                         "--thresholds", "hypopnea=0.45"])
    assert onnx_export.run(args) == 0
    text = capsys.readouterr().out
    assert "RESULT: ok" in text and "content hash" in text
    info = read_artifact(out)
    assert info.thresholds == {"apnea": 0.3, "hypopnea": 0.45}
    assert info.provenance["data_fingerprint"] == "sha256:0123"
    with pytest.raises(ValueError, match="name=probability"):
        onnx_export.run(p.parse_args(["x", "--out", str(out), "--thresholds", "apnea"]))
    # re-export the same checkpoint with the artifact's own record (a newer exporter, same model)
    again = tmp_path / "again.onnx"
    assert onnx_export.run(p.parse_args([str(tmp_path / "ckpt" / "model"), "--out", str(again),
                                         "--like", str(out), "--exporter", "torchscript", "--no-verify"])) == 0
    info2 = read_artifact(again)
    assert info2.thresholds == info.thresholds and info2.preprocess == info.preprocess
    assert info2.provenance["data_fingerprint"] == "sha256:0123"
    assert info2.provenance["reexported_from"] == info.content_hash
    # an artifact of an older schema (other side features) does not run, and the remedy its error
    # names works: --like reads the old record for the re-export
    old = onnx.load(str(out))
    set_metadata(old, {**{e.key: e.value for e in old.metadata_props}, "schema_version": str(SCHEMA_VERSION - 1)})
    seal(old)
    onnx.save(old, str(tmp_path / "old.onnx"))
    with pytest.raises(ArtifactError, match=f"schema_version {SCHEMA_VERSION - 1} unsupported.*--like"):
        StepRuntime(tmp_path / "old.onnx")
    assert onnx_export.run(p.parse_args([str(tmp_path / "ckpt" / "model"), "--out", str(again),
                                         "--like", str(tmp_path / "old.onnx"), "--exporter", "torchscript",
                                         "--no-verify"])) == 0
    info3 = read_artifact(again)
    assert info3.schema_version == info.schema_version and info3.provenance["data_fingerprint"] == "sha256:0123"
    from synthsleep.model import SleepModel, load_config

    ocfg = load_config("small", overrides={**TINY, "modalities": ["eeg", "eog"]})
    save_model(SleepModel(ocfg), ocfg, tmp_path / "two" / "model")
    with pytest.raises(ValueError, match="montage"):
        onnx_export.run(p.parse_args([str(tmp_path / "two" / "model"), "--out", str(tmp_path / "x.onnx"),
                                      "--like", str(out)]))

    v = argparse.ArgumentParser()
    verify.add_arguments(v)
    assert verify.run(v.parse_args([str(out), "--checkpoint", str(tmp_path / "ckpt" / "model"),
                                    "--steps", "5"])) == 0
    assert "ORT vs PyTorch" in capsys.readouterr().out
    assert verify.run(v.parse_args([str(out), "--steps", "3"])) == 0  # artifact-only check
    _tamper(out, tmp_path / "bad.onnx", "weights")
    assert verify.run(v.parse_args([str(tmp_path / "bad.onnx")])) == 1
    assert "hash mismatch" in capsys.readouterr().err
    # a checkpoint with other weights than the artifact fails parity
    other, _ = tiny_model(seed=4)
    save_model(other, cfg, tmp_path / "other" / "model")
    assert verify.run(v.parse_args([str(out), "--checkpoint", str(tmp_path / "other" / "model"),
                                    "--steps", "2"])) == 1
