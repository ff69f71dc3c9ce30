"""Alert rules with hysteresis and de-duplication, read from TOML.

Each rule watches one number and raises an alert when it goes above ``raise_above``; the alert
stays active (no repeats) until the number falls below ``clear_below``, then it is cleared once.
Raise and clear are :class:`~synthsleep.events.Event` objects of type ``alert_raised`` /
``alert_cleared`` whose ``value`` is ``{"rule", "kind", "severity", "value", "threshold"}``.

Rule kinds (keys of a ``[[rules]]`` table in the TOML file, see ``synthsleep/configs/alerts.toml``):

* ``apnea_burden``: fraction of the scored epochs in the last ``window_minutes`` that are positive
  for apnea (or hypopnea too with ``include_hypopnea = true``). Needs at least ``min_fill`` of
  the window scored before it can raise.
* ``ahi``: running AHI (events/h of predicted sleep) once ``min_sleep_minutes`` of sleep.
* ``signal_lost``: seconds a modality has been absent (one alert per modality; ``modalities``
  limits which). Value = seconds lost at the end of the current epoch; clears when restored.
* ``no_output``: wall-clock seconds since the last scored epoch, checked by
  :meth:`AlertEngine.tick`; clears at the next epoch.

The engine's state is JSON-able (:meth:`AlertEngine.state_dict`). Live path: no torch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from synthsleep.events import EPOCH_SECONDS, EpochSummary, Event
from synthsleep.tomlconfig import ConfigError, check_keys, read_toml

log = logging.getLogger(__name__)

RULE_KINDS: tuple[str, ...] = ("apnea_burden", "ahi", "signal_lost", "no_output")
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
STATE_VERSION = 1

# kind -> {key: (type, default)}; a default of None means required
_KIND_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "apnea_burden": {"window_minutes": ((int, float), 10.0), "include_hypopnea": (bool, True),
                     "min_fill": ((int, float), 0.5)},
    "ahi": {"min_sleep_minutes": ((int, float), 60.0)},
    "signal_lost": {"modalities": (list, None)},
    "no_output": {},
}
_COMMON_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "name": (str, None), "kind": (str, None), "raise_above": ((int, float), None),
    "clear_below": ((int, float), None), "severity": (str, "warning"), "enabled": (bool, True),
}


class RuleError(ConfigError):
    """An alert rule file or table that cannot be used (names the file, rule and key)."""


@dataclass(frozen=True)
class Rule:
    """One alert rule (see the module docstring for the kinds and their ``params``)."""

    name: str
    kind: str
    raise_above: float
    clear_below: float
    severity: str = "warning"
    params: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str = "<rules>") -> Rule:
        """Validate one ``[[rules]]`` table; raises RuleError naming ``source`` and the key."""
        where = f"{source}: rule {table.get('name', '?')!r}"
        kind = table.get("kind")
        if kind not in RULE_KINDS:
            raise RuleError(f"{where}: kind {kind!r} unknown; known kinds: {', '.join(RULE_KINDS)}")
        allowed = {**_COMMON_KEYS, **_KIND_KEYS[kind]}
        try:
            check_keys(table, allowed, f"{where} ({kind})")
        except ConfigError as e:
            raise RuleError(str(e)) from None
        vals: dict[str, Any] = {}
        for key, (typ, default) in allowed.items():
            if key not in table:
                if default is None and key != "modalities":
                    raise RuleError(f"{where}: missing key {key!r}")
                vals[key] = default
                continue
            v = table[key]
            if isinstance(v, bool) and typ is not bool or not isinstance(v, typ):
                raise RuleError(f"{where}: {key} = {v!r} has the wrong type")
            if isinstance(v, float) and not math.isfinite(v):
                raise RuleError(f"{where}: {key} = {v!r} must be finite")
            vals[key] = v
        if vals["clear_below"] > vals["raise_above"]:
            raise RuleError(f"{where}: clear_below {vals['clear_below']} > raise_above "
                            f"{vals['raise_above']} (hysteresis needs clear_below <= raise_above)")
        if vals["severity"] not in SEVERITIES:
            raise RuleError(f"{where}: severity {vals['severity']!r} not one of {SEVERITIES}")
        if kind == "apnea_burden":
            if vals["window_minutes"] <= 0 or not 0 <= vals["min_fill"] <= 1:
                raise RuleError(f"{where}: window_minutes must be > 0 and min_fill in [0, 1]")
        if kind == "signal_lost" and vals["modalities"] is not None:
            if not all(isinstance(m, str) for m in vals["modalities"]):
                raise RuleError(f"{where}: modalities must be a list of names")
        params = {k: vals[k] for k in _KIND_KEYS[kind]}
        return cls(vals["name"], kind, float(vals["raise_above"]), float(vals["clear_below"]),
                   vals["severity"], params, vals["enabled"])


def default_rules_path() -> Path:
    """The shipped ``synthsleep/configs/alerts.toml``."""
    return Path(str(resources.files("synthsleep") / "configs" / "alerts.toml"))


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Read the enabled rules of a TOML file (the shipped defaults when ``path`` is None).

    Raises:
        RuleError: file missing, invalid TOML, bad/duplicate rule.
    """
    p = Path(path) if path is not None else default_rules_path()
    try:
        raw = read_toml(p, "alert rules")
        check_keys(raw, ("rules",), str(p))
    except ConfigError as e:
        raise RuleError(str(e)) from None
    tables = raw.get("rules", [])
    if not isinstance(tables, list):
        raise RuleError(f"{p}: 'rules' must be an array of tables ([[rules]])")
    rules = [Rule.from_table(t, str(p)) for t in tables]
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RuleError(f"{p}: duplicate rule name(s) {dup}")
    enabled = [r for r in rules if r.enabled]
    log.debug("loaded %d alert rules (%d enabled) from %s", len(rules), len(enabled), p)
    return enabled


@dataclass
class _AlertState:
    active: bool = False
    since: float = 0.0  # onset (stream clock) of the raise
    value: float = 0.0  # last value seen


class AlertEngine:
    """Evaluates one bed's rules after every epoch (``update``) and on a timer (``tick``).

    Args:
        bed: bed identifier; model_hash: copied into the alert events.
        rules: from :func:`load_rules`; epoch_seconds: epoch length (s).
    """

    def __init__(self, bed: str | int, rules: Sequence[Rule], model_hash: str = "",
                 epoch_seconds: float = EPOCH_SECONDS) -> None:
        self.bed = str(bed)
        self.rules = list(rules)
        self.model_hash = model_hash
        self.epoch_seconds = float(epoch_seconds)
        self.alerts: dict[str, _AlertState] = {}  # key: rule name or "rule:modality"
        self.window: list[tuple[int, float, bool, bool]] = []  # (index, onset, apnea, hypopnea)
        self.last_index = -1
        self.last_end = 0.0  # end of the last epoch (stream clock, s)
        self.last_output_wall: float | None = None  # time.time() at the last update

    @property
    def active(self) -> list[str]:
        """Keys of the active alerts (rule name, or ``rule:modality`` for signal_lost)."""
        return sorted(k for k, a in self.alerts.items() if a.active)

    def _check(self, key: str, rule: Rule, value: float | None, onset: float, index: int) -> list[Event]:
        """Hysteresis for one alert key; ``value`` None = not evaluable (state kept)."""
        st = self.alerts.setdefault(key, _AlertState())
        if value is None:
            return []
        st.value = float(value)
        payload = {"rule": rule.name, "kind": rule.kind, "severity": rule.severity,
                   "value": round(float(value), 6), "key": key}
        if not st.active and value > rule.raise_above:
            st.active, st.since = True, onset
            log.warning("bed %s: alert %s raised (value %.3g > %.3g)", self.bed, key, value, rule.raise_above)
            return [Event(self.bed, "alert_raised", onset, 0.0,
                          {**payload, "threshold": rule.raise_above}, index, self.model_hash)]
        if st.active and value < rule.clear_below:
            st.active = False
            log.info("bed %s: alert %s cleared (value %.3g < %.3g)", self.bed, key, value, rule.clear_below)
            return [Event(self.bed, "alert_cleared", onset, max(0.0, onset - st.since),
                          {**payload, "threshold": rule.clear_below}, index, self.model_hash)]
        return []

    def update(self, summary: EpochSummary, now: float | None = None) -> list[Event]:
        """Evaluate every epoch rule on the epoch just scored; ``now`` = wall time (s, time.time())."""
        self.last_output_wall = time.time() if now is None else float(now)
        self.last_index, self.last_end = summary.epoch_index, summary.end
        if summary.scored:
            self.window.append((summary.epoch_index, summary.onset, summary.apnea, summary.hypopnea))
        events: list[Event] = []
        idx, onset = summary.epoch_index, summary.onset
        for rule in self.rules:
            if rule.kind == "apnea_burden":
                events += self._check(rule.name, rule, self._burden(rule, summary), onset, idx)
            elif rule.kind == "ahi":
                enough = summary.sleep_seconds >= 60.0 * rule.params["min_sleep_minutes"]
                events += self._check(rule.name, rule, summary.ahi if enough else None, onset, idx)
            elif rule.kind == "signal_lost":
                wanted = rule.params["modalities"]
                keys = {f"{rule.name}:{m}" for m in summary.lost_since
                        if wanted is None or m in wanted}
                keys |= {k for k in self.alerts if k.startswith(rule.name + ":")}
                for key in sorted(keys):
                    m = key.split(":", 1)[1]
                    lost = summary.end - summary.lost_since[m] if m in summary.lost_since else 0.0
                    events += self._check(key, rule, lost, onset, idx)
            elif rule.kind == "no_output":
                events += self._check(rule.name, rule, 0.0, onset, idx)
        self._trim_window(onset)
        return events

    def _burden(self, rule: Rule, s: EpochSummary) -> float | None:
        span = 60.0 * rule.params["window_minutes"]
        inside = [w for w in self.window if w[1] > s.onset - span]
        capacity = max(1, round(span / self.epoch_seconds))
        if len(inside) < rule.params["min_fill"] * capacity:
            return None
        hyp = rule.params["include_hypopnea"]
        return sum(1 for w in inside if w[2] or (hyp and w[3])) / len(inside)

    def _trim_window(self, onset: float) -> None:
        spans = [60.0 * r.params["window_minutes"] for r in self.rules if r.kind == "apnea_burden"]
        keep = max(spans, default=0.0)
        self.window = [w for w in self.window if w[1] > onset - keep]

    def tick(self, now: float | None = None) -> list[Event]:
        """Check the ``no_output`` rules at wall time ``now`` (s, time.time()); call it periodically.

        The events carry the last processed epoch's index and an onset extrapolated on the stream
        clock (end of the last epoch + wall seconds since it was processed).
        """
        now = time.time() if now is None else float(now)
        if self.last_output_wall is None:
            return []
        silent = now - self.last_output_wall
        events: list[Event] = []
        for rule in self.rules:
            if rule.kind == "no_output":
                events += self._check(rule.name, rule, silent, self.last_end + silent, self.last_index)
        return events

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """JSON-able snapshot (alert states, burden window, clocks)."""
        return {
            "version": STATE_VERSION, "bed": self.bed,
            "alerts": {k: {"active": a.active, "since": a.since, "value": a.value}
                       for k, a in self.alerts.items()},
            "window": [list(w) for w in self.window],
            "last_index": self.last_index, "last_end": self.last_end,
            "last_output_wall": self.last_output_wall,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or str(state.get("bed")) != self.bed:
            raise RuleError(f"alert state (version {state.get('version')!r}, bed {state.get('bed')!r}) "
                            f"does not belong to bed {self.bed!r} (version {STATE_VERSION})")
        self.alerts = {k: _AlertState(bool(v["active"]), float(v["since"]), float(v["value"]))
                       for k, v in state["alerts"].items()}
        self.window = [(int(i), float(o), bool(a), bool(h)) for i, o, a, h in state["window"]]
        self.last_index = int(state["last_index"])
        self.last_end = float(state["last_end"])
        lw = state.get("last_output_wall")
        self.last_output_wall = None if lw is None else float(lw)
