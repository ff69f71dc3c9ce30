"""The Grafana dashboard and Prometheus config refer to metrics that exist; alerts import no torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from synthsleep.alerts.events import Event
from synthsleep.alerts.metrics import DEFAULT_PORT, MonitorMetrics

REPO = Path(__file__).resolve().parents[2]


def exposed_sample_names() -> set[str]:
    m = MonitorMetrics()
    m.observe_epoch("1", [0.2] * 5, 0.1, 0.1, 2, latency_seconds=0.01, ahi=3.0)
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
        "import synthsleep.alerts, synthsleep.alerts.metrics, synthsleep.alerts.sinks\n"
        "from synthsleep.alerts import EventDetector, AlertEngine, load_rules, JsonlSink\n"
        "d = EventDetector('1', ('eeg',)); e = AlertEngine('1', load_rules())\n"
        "ev = d.update(0, 0.0, [1, 0, 0, 0, 0], 0.1, 0.1); ev += e.update(d.summary)\n"
        f"JsonlSink({str(tmp_path / 'e.jsonl')!r}).write(ev)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "NO_TORCH"
