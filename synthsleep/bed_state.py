"""The monitor's per-bed resume state: one ``bed-<id>.npz`` per bed in a locked folder.

A state file holds the bed's session id, its recurrent model state, its event/alert state and
its stream position (origin, next epoch, normaliser statistics). It is written atomically after
every epoch, owner-only (0600). Loading never raises: a file that is missing, unreadable,
truncated, from another model or version, older than :data:`RESUME_WITHIN_S` (another night), or from
another clock (the machine restarted, so the stream origin means nothing any more) gives ``None`` and the monitor starts a NEW session; a
file that cannot be read at all is renamed aside (``<name>.corrupt-<UTC time>``) and logged,
so the evidence is kept and the bed goes on.

The folder is locked (``flock`` on ``<dir>/.lock``): two monitors sharing one ``--state-dir``
would overwrite each other's state, so the second is refused with :class:`StateDirLocked`.

Live path: numpy, pylsl and the standard library only (no torch).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATE_VERSION = 3  # 3: the side context (StepState.side_context)
#: a saved state older than this is another night's: the bed starts a new session instead of
#: filling the hours in between with empty epochs
RESUME_WITHIN_S = 3600.0
#: a saved state whose clock offset (wall time - LSL local clock) moved by more than this was
#: written before the machine restarted: its stream origin is on another clock
CLOCK_TOLERANCE_S = 5.0


class StateDirLocked(RuntimeError):
    """Another monitor holds the state folder."""


@dataclass
class SavedState:
    """What a bed resumes from (see the module docstring)."""

    session_id: str
    conv_state: np.ndarray
    ssm_state: np.ndarray
    side_context: np.ndarray  # StepState.side_context
    session: dict[str, Any]  # BedSession.state_dict()
    stream: dict[str, Any]  # StreamEpochs.state_dict()


def new_session_id() -> str:
    """A fresh session id: UTC start time plus a random suffix, e.g. ``20261129T201500Z-3f2a9c1d``."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def _clock_offset() -> float:
    import pylsl

    return time.time() - pylsl.local_clock()


def _safe_name(bed: str) -> str:
    """Bed id as a file name part (no path separators, bounded length)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", bed)[:100] or "_"


class StateStore:
    """Locked folder of per-bed state files.

    Args:
        folder: the state folder (created, 0700).
        model_hash: the artifact's hash; a state saved by another model is not resumed.

    Raises:
        StateDirLocked: another process holds the folder.
        OSError: the folder cannot be created or locked (message names it).
    """

    def __init__(self, folder: str | Path, model_hash: str) -> None:
        self.folder = Path(folder)
        self.model_hash = model_hash
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise OSError(e.errno, f"cannot use state folder {self.folder}: {e.strerror}") from None
        try:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        except OSError:
            os.close(self._lock_fd)
            raise StateDirLocked(f"state folder {self.folder} is in use by another monitor (locked); "
                                 "give each monitor its own --state-dir") from None

    def path(self, bed: str) -> Path:
        return self.folder / f"bed-{_safe_name(bed)}.npz"

    def load(self, bed: str) -> SavedState | None:
        """The bed's saved state, or None (logged) when there is none usable."""
        path = self.path(bed)
        if not path.exists():
            log.info("bed %s: no saved state in %s; starting a new session", bed, self.folder)
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                conv, ssm = np.array(z["conv_state"]), np.array(z["ssm_state"])
                context = np.array(z["side_context"]) if "side_context" in z.files else None
            session_id = str(meta["session_id"]) if meta.get("version") == STATE_VERSION else ""
        except Exception as exc:  # noqa: BLE001 - any unreadable file (BadZipFile, EOF, JSON...) is moved aside
            self._move_aside(bed, path, exc)
            return None
        if meta.get("version") != STATE_VERSION or meta.get("model_hash") != self.model_hash or context is None:
            log.warning("bed %s: saved state %s is from another model or state version (model %s, version "
                        "%s); starting a new session", bed, path, str(meta.get("model_hash"))[:40],
                        meta.get("version"))
            return None
        saved_at = meta.get("saved_at")
        age = time.time() - saved_at if isinstance(saved_at, (int, float)) else -1.0
        if not 0.0 <= age <= RESUME_WITHIN_S:
            log.warning("bed %s: saved state %s is %.0f s old (another night?); starting a new session",
                        bed, path, age)
            return None
        offset = meta.get("clock_offset")
        if not isinstance(offset, (int, float)) or abs(offset - _clock_offset()) > CLOCK_TOLERANCE_S:
            log.warning("bed %s: saved state %s was written on another clock (the machine restarted "
                        "since?); starting a new session", bed, path)
            return None
        try:
            return SavedState(session_id, conv, ssm, context, dict(meta["session"]), dict(meta["stream"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._move_aside(bed, path, exc)
            return None

    def save(self, bed: str, state: SavedState) -> None:
        """Write atomically (temp file, fsync, rename), 0600."""
        meta = {"version": STATE_VERSION, "model_hash": self.model_hash, "bed": bed,
                "session_id": state.session_id, "clock_offset": _clock_offset(), "saved_at": time.time(),
                "session": state.session, "stream": state.stream}
        path = self.path(bed)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), conv_state=state.conv_state,
                         ssm_state=state.ssm_state, side_context=state.side_context)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _move_aside(self, bed: str, path: Path, exc: BaseException) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        try:
            os.replace(path, aside)
            log.error("bed %s: saved state %s is unreadable (%s); moved aside to %s, starting a new session",
                      bed, path, reason, aside.name)
        except OSError as e:
            log.error("bed %s: saved state %s is unreadable (%s) and cannot be moved aside (%s); "
                      "starting a new session (it will be overwritten)", bed, path, reason, e.strerror)

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
