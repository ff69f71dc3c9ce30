"""The one TOML config loader: read a file, check its keys, fill a typed dataclass.

Used by the model configs (``model.config.load_config``: read here, keys checked by
``ModelConfig.from_dict``), the run configs (``offline_training.config``), the alert rules
(``alerts.rules``) and the monitor's beds file (``monitor.load_beds_config``); torch-free, so
the live path may import it. Every error is a ``ConfigError`` (a ValueError) naming the file (or ``--set KEY``), the key
and the value. The command line overrides files everywhere: callers apply ``--set`` overrides or
explicit options after the file.

- ``read_toml(path, what)``: the parsed document; a missing file or invalid TOML is an error.
- ``check_keys(table, known, where)``: unknown keys are an error listing the known ones.
- ``coerce(default, value, where)``: a value of the default's type (bool stays bool, a whole
  number is accepted for a float, a list for a tuple).
- ``from_table(cls, table, where)``: a dataclass instance from a (nested) table; fields whose
  default is a dataclass are sub-tables, ``dict`` fields are free tables.
- ``parse_override("a.b=1")`` and ``set_path(obj, "a.b", value, where)``: ``--set`` overrides.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, table, key or value that cannot be used (the message names which)."""


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Parse the TOML file ``path``; ``what`` names the kind of file in errors."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {p} does not exist") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None


def check_keys(table: Mapping[str, Any], known: Iterable[str], where: str, prefix: str = "") -> None:
    """Raise ConfigError when ``table`` holds a key not in ``known``; the message names ``where``
    (the file) and each unknown key as ``prefix + key`` (e.g. ``finetune.chnk``)."""
    known = list(known)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(repr(prefix + k) for k in unknown)}; "
                          f"known {'in [' + prefix.rstrip('.') + '] ' if prefix else ''}keys: {sorted(known)}")


def coerce(default: Any, value: Any, where: str) -> Any:
    """``value`` checked against (and converted to) the type of ``default``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if isinstance(default, float):
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return type(default)(value)
    if isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        return dict(value)
    return value


def _settable(cls: type) -> dict[str, dataclasses.Field]:
    """The fields a file may set (``metadata={"internal": True}`` ones are not)."""
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def update_from_table(obj: Any, table: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """Set ``obj``'s fields from ``table`` (recursing into dataclass sub-tables, in place)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the document'} must be a table, got {table!r}")
    fields = _settable(type(obj))
    check_keys(table, fields, where, prefix)
    for k, v in table.items():
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur):
            update_from_table(cur, v, where, f"{prefix}{k}.")
        else:
            setattr(obj, k, coerce(cur if cur is not None else _default(fields[k]), v,
                                   f"{where}: {prefix}{k}"))


def from_table(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """A ``cls`` instance: its defaults, then ``table`` (unknown keys and bad types rejected)."""
    obj = cls()
    update_from_table(obj, table, where)
    return obj


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses (1, 1e-3, true, "x", [1,2]), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> (``"section.key"``, TOML value)."""
    key, eq, val = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    return key.strip(), parse_value(val.strip())


def set_path(obj: Any, dotted: str, value: Any, where: str) -> None:
    """Set ``obj.a.b = value`` for ``dotted="a.b"`` (dict fields take any key below them)."""
    *parents, last = dotted.split(".")
    if _free_path(obj, parents):
        _set_free(obj, parents, last, value)
        return
    nested: Any = value
    for part in reversed(dotted.split(".")):
        nested = {part: nested}
    update_from_table(obj, nested, where)


def _free_path(obj: Any, parents: list[str]) -> bool:
    """True when ``parents`` reach into a free (dict) table of ``obj``."""
    cur = obj
    for p in parents:
        if isinstance(cur, dict):
            return True
        if not dataclasses.is_dataclass(cur) or p not in _settable(type(cur)):
            return False
        cur = getattr(cur, p)
    return isinstance(cur, dict)


def _set_free(obj: Any, parents: list[str], last: str, value: Any) -> None:
    cur = obj
    for p in parents:
        cur = cur.setdefault(p, {}) if isinstance(cur, dict) else getattr(cur, p)
    cur[last] = value
