"""The ward view in a real headless Chromium: a real monitor, three beds fed by real LSL replays
on loopback; every bed is on the page and the page follows each scored epoch live (SSE).

A screenshot is saved as ``test-artifacts/ward-browser.png``.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from synthsleep.export.runtime import StepRuntime
from synthsleep.monitor import BedSpec, Monitor
from synthsleep.stream.player import ReplayPlayer
from synthsleep.ward.server import serve_monitor

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium + chromedriver on this machine (`make test` installs Debian's chromium and "
           "chromium-driver when it runs as root; install them to run the browser test)")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _cards(driver) -> dict[str, dict[str, str]]:
    """Bed id -> the card's epoch (data attribute) and stage text, as the browser renders them."""
    return driver.execute_script(
        "const o = {}; for (const s of document.querySelectorAll('section.bed')) o[s.dataset.bed] = "
        "{epoch: s.dataset.epoch, stage: s.querySelector('.stage-name').textContent, "
        "ahi: s.querySelector('.ahi').textContent}; return o;")


def _wait(what: str, cond, timeout: float = 90.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_ward_page_shows_every_bed_and_follows_epochs(tiny_artifact, synthetic_edf, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    tag = uuid.uuid4().hex[:8]
    beds = {"A1": f"ward-a1-{tag}", "A2": f"ward-a2-{tag}", "B7": f"ward-b7-{tag}"}
    mon = Monitor([BedSpec(b, n) for b, n in beds.items()], StepRuntime(tiny_artifact),
                  tmp_path / "events.jsonl", markers=False, resolve_timeout=2.0, max_buflen=3600)
    ward = serve_monitor(mon)
    stop = threading.Event()
    loop = threading.Thread(target=mon.run, args=(stop,), name="test-monitor", daemon=True)
    loop.start()
    players: list[ReplayPlayer] = []
    driver = _browser()
    try:
        driver.get(ward.url)
        WebDriverWait(driver, 60).until(lambda d: set(_cards(d)) == set(beds))
        # no stream yet: every bed is shown, connecting (the monitor's resolves keep failing)
        WebDriverWait(driver, 30).until(lambda d: all(c["stage"] == "connecting" for c in _cards(d).values()))
        # the nights start only now: 20 epochs each at 20x (an epoch every 1.5 s)
        for name in beds.values():
            players.append(ReplayPlayer(str(synthetic_edf), name=name, speed=20.0, wait_consumers=60.0,
                                        markers=False))
            players[-1].start()
        first = _wait("a first epoch on every card",
                      lambda: (c := _cards(driver)) and all(x["epoch"] != "" for x in c.values()) and c)
        # the page moves on with the monitor, without a reload: each card shows a later epoch
        later = _wait("a later epoch on every card", lambda: (c := _cards(driver)) and all(
            int(c[b]["epoch"]) >= int(first[b]["epoch"]) + 2 for b in beds) and c)
        for b in beds:
            done = mon.beds[b].session.detector.last_index
            assert done is not None and int(later[b]["epoch"]) <= done
            assert later[b]["stage"] in ("W", "N1", "N2", "N3", "REM", "unknown")
        assert driver.execute_script("return document.getElementById('conn').textContent") == "live"
        # the epoch's clinical time (the stream clock mapped to the system clock), in local time
        assert driver.execute_script("return document.querySelectorAll('section.bed .epoch-time').length") == 3
        hyp = driver.execute_script("return document.querySelectorAll('section.bed svg.hyp path.trace').length")
        assert hyp >= len(beds)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "ward-browser.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
        stop.set()
        loop.join(30)
        for p in players:
            p.stop()
        mon.close(flush=False)
        ward.stop()
