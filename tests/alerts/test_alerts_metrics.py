"""Metrics: a real HTTP scrape of the endpoint, parsed with prometheus_client's parser."""

from __future__ import annotations

import socket

import pytest
from prometheus_helpers import scrape

from synthsleep.alerts.metrics import MonitorMetrics, start_metrics_server
from synthsleep.events import EventDetector


def onehot(stage: int) -> list[float]:
    p = [0.025] * 5
    p[stage] = 0.9
    return p


def test_scrape_moves_with_epochs():
    m = MonitorMetrics()
    server = start_metrics_server(m, port=0)
    try:
        assert server.port > 0 and server.host == "127.0.0.1"
        det = EventDetector("1", ("eeg",))
        for i in range(3):
            evs = det.update(i, 30.0 * i, onehot(2), 0.9 if i == 1 else 0.1, 0.2)
            m.write(evs)
            m.observe_epoch("1", onehot(2), 0.1, 0.2, stage_code=2, latency_seconds=0.003, ahi=det.ahi,
                            epoch_latency_seconds=0.02)
            m.add_samples("1", 3000)
        m.set_lag("1", 0.25)
        m.add_gap("1")
        m.set_alerts_active("1", 2)
        s = scrape(server.url)
        b = (("bed", "1"),)
        assert s[("synthsleep_epochs_processed_total", b)] == 3
        assert s[("synthsleep_stage_probability", (("bed", "1"), ("stage", "N2")))] == pytest.approx(0.9)
        assert s[("synthsleep_stage", b)] == 2
        assert s[("synthsleep_apnea_probability", b)] == pytest.approx(0.1)
        assert s[("synthsleep_events_total", (("bed", "1"), ("type", "stage")))] == 3
        assert s[("synthsleep_events_total", (("bed", "1"), ("type", "apnea")))] == 1
        assert s[("synthsleep_ahi", b)] == pytest.approx(det.ahi) and det.ahi > 0
        assert s[("synthsleep_step_latency_seconds_count", b)] == 3
        assert s[("synthsleep_step_latency_seconds_bucket", (("bed", "1"), ("le", "0.005")))] == 3
        assert s[("synthsleep_epoch_latency_seconds_count", b)] == 3  # end to end: its own histogram
        assert s[("synthsleep_epoch_latency_seconds_bucket", (("bed", "1"), ("le", "0.01")))] == 0
        assert s[("synthsleep_stream_lag_seconds", b)] == 0.25
        assert s[("synthsleep_samples_received_total", b)] == 9000
        assert s[("synthsleep_gaps_total", b)] == 1
        assert s[("synthsleep_alerts_active", b)] == 2
        # the counter moves with the next epoch
        m.observe_epoch("1", onehot(0), 0.0, 0.0, stage_code=0)
        m.observe_epoch("2", onehot(4), 0.0, 0.0, stage_code=4)
        s2 = scrape(server.url)
        assert s2[("synthsleep_epochs_processed_total", b)] == 4
        assert s2[("synthsleep_epochs_processed_total", (("bed", "2"),))] == 1
        assert s2[("synthsleep_stage", b)] == 0
        # own registry, not the global one
        assert not any(k[0].startswith("python_gc") or k[0].startswith("process_") for k in s2)
    finally:
        server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_port_taken_is_a_clear_error():
    m = MonitorMetrics()
    first = start_metrics_server(m, port=0)
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            start_metrics_server(MonitorMetrics(), port=first.port)
    finally:
        first.stop()
