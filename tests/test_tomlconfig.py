"""The one TOML config loader (``synthsleep.tomlconfig``) and the files that go through it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from synthsleep.tomlconfig import (
    ConfigError,
    check_keys,
    coerce,
    from_table,
    parse_override,
    read_toml,
    set_path,
)


@dataclass
class _Inner:
    n: int = 2
    rate: float = 0.5
    on: bool = False


@dataclass
class _Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    inner: _Inner = field(default_factory=_Inner)
    free: dict = field(default_factory=dict)
    hidden: str | None = field(default=None, metadata={"internal": True})


def test_read_toml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="rules file .*nope.toml does not exist"):
        read_toml(tmp_path / "nope.toml", "rules")
    bad = tmp_path / "bad.toml"
    bad.write_text("a = = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        read_toml(bad)
    assert isinstance(ConfigError("x"), ValueError)


def test_from_table_types_nesting_and_unknown_keys():
    o = from_table(_Outer, {"name": "y", "sizes": [3], "inner": {"n": 4.0, "rate": 1}, "free": {"k": 1}}, "f.toml")
    assert o == _Outer("y", (3,), _Inner(4, 1.0, False), {"k": 1})
    assert isinstance(o.inner.n, int) and isinstance(o.inner.rate, float)
    with pytest.raises(ConfigError, match=r"f.toml: unknown key\(s\) 'inner.m'; known in \[inner\] keys"):
        from_table(_Outer, {"inner": {"m": 1}}, "f.toml")
    with pytest.raises(ConfigError, match="'hidden'"):  # internal fields are not settable
        from_table(_Outer, {"hidden": "z"}, "f.toml")
    for table, msg in (({"inner": {"n": 1.5}}, "inner.n must be an integer"),
                       ({"inner": {"on": 1}}, "inner.on must be true/false"),
                       ({"inner": {"rate": True}}, "inner.rate must be a number"),
                       ({"name": 3}, "name must be a string"),
                       ({"sizes": 3}, "sizes must be a list"),
                       ({"inner": 3}, "inner must be a table")):
        with pytest.raises(ConfigError, match=msg):
            from_table(_Outer, table, "f.toml")


def test_overrides_after_the_file():
    o = from_table(_Outer, {"inner": {"n": 4}}, "f.toml")
    for text in ("inner.n=7", "free.a.b=x", "name=\"z\""):
        key, value = parse_override(text)
        set_path(o, key, value, f"--set {key}")
    assert o.inner.n == 7 and o.free == {"a": {"b": "x"}}
    assert o.name == "z"
    with pytest.raises(ConfigError, match="--set inner.q"):
        set_path(o, "inner.q", 1, "--set inner.q")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("novalue")
    assert coerce(1.0, 2, "x") == 2.0 and coerce((1,), [2, 3], "x") == (2, 3)


def test_check_keys_lists_what_is_known():
    with pytest.raises(ConfigError, match=r"beds.toml: unknown key\(s\) 'monitor.x'; known in \[monitor\] keys: \['a'\]"):
        check_keys({"x": 1}, ["a"], "beds.toml", "monitor.")
    check_keys({"a": 1}, ["a"], "beds.toml")


def test_every_shipped_toml_loads(tmp_path):
    """Run configs, alert rules and a beds file all go through the loader and reject typos."""
    from synthsleep.alerts.rules import RuleError, default_rules_path, load_rules
    from synthsleep.offline_training.config import RunConfigError, load_run_config

    assert load_run_config("train_small").finetune.night_passes > 0
    assert load_rules(default_rules_path())
    bad = tmp_path / "alerts.toml"
    bad.write_text(default_rules_path().read_text().replace("raise_above = 30.0", "raise_abov = 30.0"))
    with pytest.raises(RuleError, match="alerts.toml.*'raise_abov'"):
        load_rules(bad)
    bad.write_text("[[rule]]\nname = 'x'\n")
    with pytest.raises(RuleError, match="'rule'"):
        load_rules(bad)
    from synthsleep.model import load_config
    from synthsleep.model.config import CONFIG_DIR
    from synthsleep.model.config import ConfigError as ModelConfigError

    assert load_config("small").name == "small"
    model = tmp_path / "m.toml"
    model.write_text((CONFIG_DIR / "small.toml").read_text() + "\nfusion_dmi = 3\n")
    with pytest.raises(ModelConfigError, match="m.toml.*fusion_dmi"):
        load_config(model)
    assert issubclass(ModelConfigError, ConfigError)
    run = tmp_path / "run.toml"
    run.write_text("seed = 1\n[finetune]\nlanes = 2\n[probe]\nstep = 3\n")
    with pytest.raises(RunConfigError, match=r"run.toml: unknown key\(s\) 'probe.step'"):
        load_run_config(run)
