"""The fault matrix as a table: faults tried, passed, lost, doubled, crashed, garbage.

Runs every case of ``synthsleep.faultcheck`` (real LSL on loopback, real files) against the
bundled model, or ``--model``; ``--quick`` leaves out the slow idle-exit case (35 s). Same as
``synthsleep check-faults``. Exit status 1 when any fault did not pass.
"""

from __future__ import annotations

import argparse
import sys

from synthsleep.faultcheck import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
