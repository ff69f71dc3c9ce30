"""StopFlag: a signal handler can set it while the main thread is inside its ``wait``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# SIGTERM sent thousands of times while the main thread polls the flag: a flag whose set() takes
# a lock held by wait() (threading.Event) deadlocks or overflows the stack within a few hundred
# signals; the StopFlag must come out of every one.
SPAM = textwrap.dedent("""
    import os, signal, threading, time
    from synthsleep.stop_flag import stop_on_signals
    flag = stop_on_signals()
    def spam():
        for _ in range(20000):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0)
    threading.Thread(target=spam, daemon=True).start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:
        flag.wait(1e-5)
    print("stopped" if flag.is_set() else "never set", flush=True)
""")


def test_signals_set_the_flag_without_deadlock():
    proc = subprocess.run([sys.executable, "-c", SPAM], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "stopped"


def test_wait_sleeps_until_set_then_returns_at_once():
    from synthsleep.stop_flag import StopFlag

    flag = StopFlag()
    assert flag.wait(0.0) is False and not flag.is_set()
    flag.set()
    assert flag.is_set() and flag.wait(3600.0) is True  # set: no sleep
