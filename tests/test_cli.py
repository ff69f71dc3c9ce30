"""The ``synthsleep`` command itself: every subcommand listed, --help cheap."""

from __future__ import annotations

import subprocess
import sys

from synthsleep.cli import COMMANDS


def test_help_lists_every_command_without_importing_the_heavy_stack():
    """``synthsleep --help`` must not import torch, scipy.signal or the synthetic generator (it
    took 2.4 s when it did); the list comes from COMMANDS alone."""
    code = ("import sys; from synthsleep.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'scipy.signal', 'synthsleep.psg.synthetic', 'onnxruntime') "
            "if m in sys.modules]\nprint('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    for name in COMMANDS:
        assert name in r.stdout
