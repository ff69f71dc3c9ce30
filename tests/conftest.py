"""Fixtures shared across the suite: a tiny exported artifact and a short synthetic night."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SHARED = TESTS.parent.parent / "shared"


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A randomly initialised tiny SleepModel (eeg, eog, emg) exported to ONNX (torchscript
    exporter: seconds). For plumbing tests; the trained model is tested separately."""
    import torch

    sys.path.insert(0, str(TESTS / "export"))
    from export_fixtures import PROVENANCE, THRESHOLDS, tiny_model

    from synthsleep.export.onnx_export import export_step
    from synthsleep.psg.preprocess import PreprocessParams

    torch.set_num_threads(1)
    model, cfg = tiny_model()
    out = tmp_path_factory.mktemp("tiny-artifact") / "tiny.onnx"
    export_step(model, cfg, out, PROVENANCE, PreprocessParams(modalities=tuple(cfg.modalities)), THRESHOLDS,
                exporter="torchscript")
    return out


@pytest.fixture(scope="session")
def subset_artifact(tmp_path_factory) -> Path:
    """The same tiny model (eeg, eog, emg; same weights as ``tiny_artifact``) exported with a
    preprocessing that produces all eight modalities, in reverse order: a model trained on a
    subset of what the shards hold. Its input rows must be picked by name."""
    import torch

    sys.path.insert(0, str(TESTS / "export"))
    from export_fixtures import PROVENANCE, THRESHOLDS, tiny_model

    from synthsleep.export.onnx_export import export_step
    from synthsleep.psg.preprocess import PreprocessParams

    torch.set_num_threads(1)
    model, cfg = tiny_model()
    params = PreprocessParams(modalities=tuple(reversed(PreprocessParams().modalities)))
    assert len(params.modalities) > len(cfg.modalities) and params.modalities[0] != cfg.modalities[0]
    out = tmp_path_factory.mktemp("subset-artifact") / "subset.onnx"
    export_step(model, cfg, out, PROVENANCE, params, THRESHOLDS, exporter="torchscript")
    return out


@pytest.fixture(scope="session")
def synthetic_edf(tmp_path_factory) -> Path:
    """A 10-minute synthetic night (20 epochs) written as EDF+ with its annotations."""
    from synthsleep.psg.synthetic import synthesize_night, write_night

    path = tmp_path_factory.mktemp("night") / "synth-s001-n1.edf"
    write_night(synthesize_night(seed=11, hours=10 / 60), path)
    return path
