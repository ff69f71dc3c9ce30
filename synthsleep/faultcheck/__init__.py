"""The fault matrix (``synthsleep check-faults``): the monitor under faults, one row per fault.

Each fault is a small scenario on real LSL (loopback) and real files (``cases``); the verdict
is ``passed``, ``lost``, ``doubled``, ``crashed`` or ``garbage``. ``tests/test_fault_matrix.py``
runs every case as a test; ``benchmarks/bench_fault_matrix.py`` prints the table.
The dropout cases need a model that reads the respiratory channels (the bundled one does); with
a model that reads none, respiratory events are not gated by contract and those cases fail.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .cases import CASES, SLOW, Ctx, run_case
from .harness import Outcome

__all__ = ["CASES", "SLOW", "Ctx", "Outcome", "run_case", "run_matrix", "format_table", "add_arguments", "run"]

VERDICTS = ("passed", "lost", "doubled", "crashed", "garbage")


def run_matrix(artifact: str | Path, names: Sequence[str] | None = None, slow: bool = True,
               progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the named cases (default: all; ``slow=False`` leaves out the slow ones)."""
    from synthsleep.export.runtime import StepRuntime

    runtime = StepRuntime(str(artifact))
    out = []
    for name in names or [n for n in CASES if slow or n not in SLOW]:
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
            verdict, detail, seconds = run_case(name, Ctx(Path(artifact), runtime, Path(tmp)))
        outcome = Outcome(name, verdict, detail, seconds)
        out.append(outcome)
        if progress:
            progress(outcome)
    return out


def format_table(outcomes: Sequence[Outcome]) -> str:
    """The matrix as text: one row per fault, then the totals per verdict."""
    width = max(len(o.fault) for o in outcomes)
    lines = [f"{'item':<12} {'fault':<{width}}  {'verdict':<8} {'s':>5}  detail"]
    for o in outcomes:
        lines.append(f"{CASES[o.fault][0]:<12} {o.fault:<{width}}  {o.verdict:<8} {o.seconds:5.1f}  {o.detail}")
    counts = {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
    lines.append("")
    lines.append(f"faults tried {len(outcomes)}: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="ONNX artifact (default: the bundled model)")
    p.add_argument("--only", action="append", default=[], metavar="FAULT", choices=sorted(CASES),
                   help="run only this fault (repeatable)")
    p.add_argument("--quick", action="store_true", help="leave out the slow faults (" + ", ".join(sorted(SLOW)) + ")")


def run(args: argparse.Namespace) -> int:
    from synthsleep.bed_session import resolve_model_path

    logging.getLogger("synthsleep").setLevel(logging.CRITICAL)  # the faults log loudly by design
    outcomes = run_matrix(resolve_model_path(args.model), args.only or None, slow=not args.quick,
                          progress=lambda o: print(f"  {o.fault}: {o.verdict} ({o.seconds:.1f} s)", flush=True))
    print(format_table(outcomes))
    return 0 if all(o.verdict == "passed" for o in outcomes) else 1
