"""A tiny SleepModel exported once (dynamo exporter, batch 2) for all export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_fixtures import PROVENANCE, THRESHOLDS, tiny_model


@pytest.fixture(scope="session")
def tiny():
    torch.set_num_threads(1)
    return tiny_model()


@pytest.fixture(scope="session")
def artifact(tiny, tmp_path_factory) -> Path:
    from synthsleep.export.onnx_export import export_step

    model, cfg = tiny
    out = tmp_path_factory.mktemp("artifact") / "tiny.onnx"
    export_step(model, cfg, out, PROVENANCE, None, THRESHOLDS, exporter="dynamo")
    return out
