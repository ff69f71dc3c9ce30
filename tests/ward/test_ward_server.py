"""The ward view's web app over real HTTP: page, bundled assets, JSON snapshot, live SSE stream."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import pytest

from synthsleep.events import Event
from synthsleep.ward import WardState
from synthsleep.ward.server import WardServer


def _stage(bed: str, i: int, stage: str = "N2", code: int = 2) -> Event:
    prob = {s: (0.9 if s == stage else 0.025) for s in ("W", "N1", "N2", "N3", "REM")}
    return Event(bed, "stage", 30.0 * i, 30.0, {"stage": stage, "code": code, "prob": prob, "resp_scored": True},
                 i, "h")


def _next_event(resp) -> dict:
    """The next ``data:`` payload of a text/event-stream response."""
    data = []
    while True:
        line = resp.readline().decode()
        assert line, "the event stream ended"
        if line.startswith("data: "):
            data.append(line[6:].rstrip("\n"))
        elif line == "\n" and data:
            return json.loads("".join(data))


@pytest.fixture
def served():
    state = WardState(["1", "2", "3"])
    server = WardServer(state).start()
    yield state, server
    server.stop()


def test_page_assets_and_snapshot(served):
    state, server = served
    assert server.host == "127.0.0.1" and server.port > 0
    with urllib.request.urlopen(server.url, timeout=10) as r:
        html = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html")
    assert '<script src="/static/ward.js">' in html and "/static/ward.css" in html
    assert "http" not in html.replace(server.url, "")  # nothing fetched from elsewhere (offline ward)
    for asset in ("ward.js", "ward.css"):
        with urllib.request.urlopen(server.url + "static/" + asset, timeout=10) as r:
            assert len(r.read()) > 500
    state.update("2", [_stage("2", 0)], ahi=None, alerts=[], sensors=["eeg"])
    with urllib.request.urlopen(server.url + "api/ward", timeout=10) as r:
        snap = json.loads(r.read())
    assert [b["bed"] for b in snap["beds"]] == ["1", "2", "3"]
    assert snap["beds"][1]["stage"] == "N2" and snap["beds"][1]["ahi"] is None
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.url + "static/../state.py", timeout=10)


def test_event_stream_pushes_each_change(served):
    state, server = served
    with urllib.request.urlopen(server.url + "api/stream", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = _next_event(resp)
        assert [b["epoch"] for b in first["beds"]] == [None, None, None]
        state.update("3", [_stage("3", 0, "W", 0)], sensors=["eeg"])
        second = _next_event(resp)
        assert second["version"] > first["version"]
        assert second["beds"][2]["epoch"] == 0 and second["beds"][2]["stage"] == "W"
        state.update("3", [_stage("3", 1, "N1", 1)], ahi=12.5, alerts=["ahi_severe"], sensors=["eeg"])
        third = _next_event(resp)
        assert third["beds"][2]["hypnogram"] == [0, 1] and third["beds"][2]["ahi"] == 12.5
        assert third["beds"][2]["alerts"] == ["ahi_severe"]
        server.stop()  # closes open streams and frees the port
        while resp.readline():
            pass
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (TIME_WAIT)
        s.bind(("127.0.0.1", server.port))  # free again


def test_port_taken_is_a_clear_error(served):
    _, server = served
    with pytest.raises(OSError, match=f"cannot serve the ward view on 127.0.0.1:{server.port}"):
        WardServer(WardState(["1"]), port=server.port).start()


def test_refresh_runs_on_the_server_and_its_changes_are_pushed():
    """``refresh`` (what no event reports, e.g. a bed's connection) runs on the server's thread
    while it serves; a change it makes reaches open streams."""
    state = WardState(["1"])
    up = threading.Event()
    server = WardServer(state, refresh=lambda: state.set_connected("1", up.is_set())).start()
    try:
        with urllib.request.urlopen(server.url + "api/stream", timeout=10) as resp:
            while _next_event(resp)["beds"][0]["connected"] is not False:
                pass
            up.set()
            while _next_event(resp)["beds"][0]["connected"] is not True:
                pass
    finally:
        server.stop()
