"""``synthsleep synth``: files, subjects shared across nights, determinism, clear errors."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest

from synthsleep.psg.synthetic.cli import add_arguments, run


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_synth_writes_nights_deterministically(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, workers in ((a, "1"), (b, "2")):  # same files whatever the number of processes
        assert run(_args("--nights", "3", "--subjects", "2", "--hours", "0.1", "--seed", "9", "--out", str(out),
                         "--ahi-range", "20", "30", "--workers", workers)) == 0
    names = sorted(p.name for p in a.glob("*.edf"))
    assert names == ["synth-s000-n0.edf", "synth-s000-n1.edf", "synth-s001-n0.edf"]
    for n in names:
        assert _digest(a / n) == _digest(b / n), n
    man = json.loads((a / "synth_manifest.json").read_text())
    by_file = {x["file"]: x for x in man["nights"]}
    # nights of one subject share the subject's parameters, other subjects differ
    assert by_file["synth-s000-n0.edf"]["subject_params"] == by_file["synth-s000-n1.edf"]["subject_params"]
    assert by_file["synth-s000-n0.edf"]["subject_params"] != by_file["synth-s001-n0.edf"]["subject_params"]
    assert by_file["synth-s000-n0.edf"]["seed"] != by_file["synth-s000-n1.edf"]["seed"]
    assert all(20 <= x["subject_params"]["ahi"] <= 30 for x in man["nights"])
    out = capsys.readouterr().out
    assert "synth-s001-n0.edf" in out and "AHI" in out  # the summary table


@pytest.mark.parametrize("argv, needle", [
    (("--nights", "0"), "--nights"),
    (("--hours", "-1"), "--hours"),
    (("--nights", "2", "--subjects", "3"), "--subjects"),
    (("--ahi-range", "30", "10"), "--ahi-range"),
    (("--workers", "0"), "--workers"),
])
def test_synth_bad_arguments(tmp_path, capsys, argv, needle):
    assert run(_args(*argv, "--out", str(tmp_path / "x"))) == 2
    assert needle in capsys.readouterr().err
    assert not list(tmp_path.glob("x/*.edf"))
