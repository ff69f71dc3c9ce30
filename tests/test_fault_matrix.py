"""The monitor under faults (issue 8): every fault of ``synthsleep.faultcheck`` as a test.

Real LSL on loopback, real files, the bundled 8-modality model (it reads the respiratory
channels the dropout faults need). Each case fails with its verdict (lost, doubled, crashed,
garbage) and the reason. ``benchmarks/bench_fault_matrix.py`` prints the same cases as a table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from synthsleep.bed_session import BUNDLED_MODEL
from synthsleep.faultcheck import CASES, SLOW, Ctx, run_case

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason="bundled model not built ('make model')")


@pytest.fixture(scope="module")
def runtime():
    from synthsleep.export.runtime import StepRuntime

    return StepRuntime(str(BUNDLED_MODEL))


@pytest.mark.parametrize("fault", [n for n in CASES if n not in SLOW])
def test_fault(fault: str, runtime, tmp_path: Path) -> None:
    verdict, detail, _ = run_case(fault, Ctx(BUNDLED_MODEL, runtime, tmp_path))
    assert verdict == "passed", f"{fault}: {verdict}: {detail}"


def test_idle_exit_fires_after_the_stream_ends(runtime, tmp_path: Path) -> None:
    """``--idle-exit 35`` (> one epoch): before, an empty epoch closed every 30 s forever."""
    verdict, detail, seconds = run_case("idle_exit_after_stream_end", Ctx(BUNDLED_MODEL, runtime, tmp_path))
    assert verdict == "passed", detail
    assert seconds < 60
