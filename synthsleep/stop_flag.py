"""A stop request that a signal handler may set (SIGINT, SIGTERM of a long-running command).

``threading.Event`` is not safe for this: CPython runs a signal handler in the main thread,
between two bytecodes of whatever it is doing, and ``Event.wait`` holds the Event's lock in
Python frames (``Condition.wait`` re-acquires it before it returns). A handler that calls
``Event.set`` there waits for a lock its own thread holds: the process never stops (CI saw a
monitor ignore SIGTERM for 20 s). :class:`StopFlag` is a plain attribute: setting it takes no
lock, and its ``wait`` sleeps, which a signal interrupts.
"""

from __future__ import annotations

import signal
import time


class StopFlag:
    """``is_set``/``set``/``wait`` like ``threading.Event``, without a lock.

    For a flag set by a signal handler in the thread that polls it; across threads use
    ``threading.Event`` (a ``wait`` here does not wake early when another thread sets it).
    """

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds unless already set; returns whether the flag is set."""
        if not self._set:
            time.sleep(timeout)
        return self._set


def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> StopFlag:
    """A :class:`StopFlag` that ``signals`` set (installs their handlers; main thread only)."""
    flag = StopFlag()
    for sig in signals:
        signal.signal(sig, lambda *_: flag.set())
    return flag
