"""The Grafana dashboard and Prometheus config refer to metrics that exist; alerts import no torch."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from synthsleep.alerts.metrics import DEFAULT_PORT, MonitorMetrics, start_metrics_server
from synthsleep.alerts.rules import load_rules
from synthsleep.events import Event

REPO = Path(__file__).resolve().parents[2]


def exposed_sample_names() -> set[str]:
    m = MonitorMetrics()
    m.observe_epoch("1", [0.2] * 5, 0.1, 0.1, 2, latency_seconds=0.01, ahi=3.0, epoch_latency_seconds=0.02)
    m.write([Event("1", "apnea", 0, 30, {}, 0, "h")])
    m.set_lag("1", 1.0)
    m.add_samples("1", 10)
    m.add_gap("1")
    m.set_alerts_active("1", 0)
    m.set_bed_faulted("1", True)
    m.add_bed_fault("1")
    text = generate_latest(m.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_dashboard_queries_use_real_metrics():
    dash = json.loads((REPO / "dashboards" / "grafana-synthsleep.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {n for e in exprs for n in re.findall(r"synthsleep_[a-z_]+", e)}
    missing = used - exposed_sample_names()
    assert not missing, f"dashboard queries unknown metrics {missing}"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ("stage", "probabilit", "ahi", "alerts", "latency", "lag"):
        assert word in titles
    assert any("histogram_quantile(0.99" in e for e in exprs)
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "bed"}


def test_prometheus_config_scrapes_default_port():
    text = (REPO / "dashboards" / "prometheus.yml").read_text()
    assert re.search(rf'targets:\s*\["127\.0\.0\.1:{DEFAULT_PORT}"\]', text)
    assert "metrics_path: /metrics" in text


def test_alerts_import_no_torch(tmp_path):
    code = (
        "import sys\n"
        "import synthsleep.alerts, synthsleep.alerts.metrics, synthsleep.alerts.sinks, synthsleep.events\n"
        "from synthsleep.alerts import AlertEngine, load_rules, JsonlSink\n"
        "from synthsleep.events import EventDetector\n"
        "d = EventDetector('1', ('eeg',)); e = AlertEngine('1', load_rules())\n"
        "ev = d.update(0, 0.0, [1, 0, 0, 0, 0], 0.1, 0.1); ev += e.update(d.summary)\n"
        f"JsonlSink({str(tmp_path / 'e.jsonl')!r}).write(ev)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "NO_TORCH"


def _dashboard_metrics() -> set[str]:
    dash = json.loads((REPO / "dashboards" / "grafana-synthsleep.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return {n for e in exprs for n in re.findall(r"synthsleep_[a-z_]+", e)}


def test_prometheus_alerts_mirror_the_shipped_rules():
    text = (REPO / "dashboards" / "alerts.yml").read_text()
    alerts = re.split(r"\n\s*- alert: ", text)[1:]
    mirrored = {}
    for block in alerts:
        rule = re.search(r"\n\s*rule: (\w+)", block)
        if rule:
            mirrored[rule.group(1)] = re.search(r"\n\s*severity: (\w+)", block).group(1)
    assert mirrored == {r.name: r.severity for r in load_rules()}
    used = set(re.findall(r"synthsleep_[a-z_]+", text))
    assert used and not used - exposed_sample_names(), f"alert rules read unknown metrics {used - exposed_sample_names()}"
    assert re.search(r"rule_files:\s*\n\s*- alerts\.yml", (REPO / "dashboards" / "prometheus.yml").read_text())


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package 'prometheus' provides it)")
def test_promtool_checks_and_unit_tests_the_alert_rules():
    check = subprocess.run(["promtool", "check", "rules", str(REPO / "dashboards" / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    cfg = subprocess.run(["promtool", "check", "config", "--syntax-only", str(REPO / "dashboards" / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    # the mirrors fire and clear (hysteresis included) on synthetic series
    unit = subprocess.run(["promtool", "test", "rules", "prometheus_alerts_test.yml"], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=120)
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_every_dashboard_metric_exists_from_the_monitors_start(tiny_artifact, tmp_path):
    """Scraped over HTTP before any stream is connected: every series a panel or an alert rule
    reads is there for every bed, at zero (stage -1: unknown)."""
    sys.path.insert(0, str(REPO / "tests"))
    from prometheus_helpers import scrape

    from synthsleep.export.runtime import StepRuntime
    from synthsleep.monitor import BedSpec, Monitor

    metrics = MonitorMetrics()
    server = start_metrics_server(metrics, port=0)
    try:
        mon = Monitor([BedSpec("7", "nobody-a"), BedSpec("8", "nobody-b")], StepRuntime(tiny_artifact),
                      tmp_path / "events.jsonl", metrics=metrics, markers=False)
        got = scrape(server.url)
        mon.close(flush=False)
    finally:
        server.stop()
    names = {k[0] for k in got}
    alert_text = (REPO / "dashboards" / "alerts.yml").read_text()
    needed = _dashboard_metrics() | set(re.findall(r"synthsleep_[a-z_]+", alert_text))
    assert not needed - names, f"missing at start: {needed - names}"
    for bed in ("7", "8"):
        for name in ("synthsleep_gaps_total", "synthsleep_epochs_processed_total", "synthsleep_samples_received_total",
                     "synthsleep_alerts_active", "synthsleep_stream_lag_seconds", "synthsleep_bed_faulted",
                     "synthsleep_bed_faults_total"):
            assert got[(name, (("bed", bed),))] == 0.0, name
        assert got[("synthsleep_stage", (("bed", bed),))] == -1.0
        assert math.isnan(got[("synthsleep_ahi", (("bed", bed),))])  # n/a until sleep with a resp. sensor, not 0
        for t in ("apnea", "signal_lost", "signal_restored"):
            assert got[("synthsleep_events_total", (("bed", bed), ("type", t)))] == 0.0
        assert got[("synthsleep_step_latency_seconds_count", (("bed", bed),))] == 0.0
        assert got[("synthsleep_epoch_latency_seconds_count", (("bed", bed),))] == 0.0
