"""Prometheus metrics of the monitor, in their own registry, served over HTTP on 127.0.0.1.

Names: ``synthsleep_`` prefix, base units (seconds), ``_total`` counters, a ``bed`` label.

=========================================  =========  ==================================
metric                                     type       labels
=========================================  =========  ==================================
synthsleep_epochs_processed_total          counter    bed
synthsleep_stage_probability               gauge      bed, stage (W, N1, N2, N3, REM)
synthsleep_stage                           gauge      bed (code 0..4 = W..REM, -1 unknown)
synthsleep_apnea_probability               gauge      bed
synthsleep_hypopnea_probability            gauge      bed
synthsleep_events_total                    counter    bed, type
synthsleep_ahi                             gauge      bed (events per hour of sleep)
synthsleep_step_latency_seconds            histogram  bed (ORT time of the batched step)
synthsleep_epoch_latency_seconds           histogram  bed (epoch closed -> its events written)
synthsleep_stream_lag_seconds              gauge      bed (now - newest sample, LSL clock)
synthsleep_samples_received_total          counter    bed
synthsleep_gaps_total                      counter    bed
synthsleep_alerts_active                   gauge      bed
synthsleep_bed_faulted                     gauge      bed (1 while the bed is faulted)
synthsleep_bed_faults_total                counter    bed
=========================================  =========  ==================================

Live path: no torch.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from synthsleep.events import EVENT_TYPES, STAGE_NAMES, Event

log = logging.getLogger(__name__)

DEFAULT_PORT = 9109
#: latency buckets (s): a step takes ~0.1-100 ms on CPU; an epoch's end-to-end latency adds the
#: events' fsync and the state save (ms) and, with many beds, the wait for its turn (up to ~1 s)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class MonitorMetrics:
    """All monitor metrics in one private ``CollectorRegistry`` (never the global one).

    It is also a :class:`~synthsleep.alerts.sinks.Sink`: ``write(events)`` counts events by type.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 stage_names: Sequence[str] = STAGE_NAMES) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.stage_names = tuple(stage_names)
        r = self.registry
        self.epochs = Counter("synthsleep_epochs_processed", "Epochs scored", ["bed"], registry=r)
        self.stage_prob = Gauge("synthsleep_stage_probability", "Stage probability of the last epoch",
                                ["bed", "stage"], registry=r)
        self.stage = Gauge("synthsleep_stage", "Stage of the last epoch (0..4 = W,N1,N2,N3,REM; -1 unknown)",
                           ["bed"], registry=r)
        self.apnea_prob = Gauge("synthsleep_apnea_probability", "Apnea probability of the last epoch",
                                ["bed"], registry=r)
        self.hypopnea_prob = Gauge("synthsleep_hypopnea_probability",
                                   "Hypopnea probability of the last epoch", ["bed"], registry=r)
        self.events = Counter("synthsleep_events", "Events emitted", ["bed", "type"], registry=r)
        self.ahi = Gauge("synthsleep_ahi", "Running apnea-hypopnea index (events per hour of sleep)",
                         ["bed"], registry=r)
        self.latency = Histogram("synthsleep_step_latency_seconds",
                                 "ONNX Runtime time of the batched model step that scored the bed's "
                                 "epoch (beds stepped together observe the same time)",
                                 ["bed"], buckets=LATENCY_BUCKETS, registry=r)
        self.epoch_latency = Histogram("synthsleep_epoch_latency_seconds",
                                       "Per bed, end to end: from the poll that closed an epoch to its "
                                       "events written (JSONL fsynced, markers pushed) and its state saved",
                                       ["bed"], buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("synthsleep_stream_lag_seconds",
                         "Seconds from the newest received sample's timestamp to now on the LSL clock "
                         "(the largest over the bed's streams; negative while a replay runs ahead)",
                         ["bed"], registry=r)
        self.samples = Counter("synthsleep_samples_received", "Samples received from the stream",
                               ["bed"], registry=r)
        self.gaps = Counter("synthsleep_gaps", "Stream gaps detected", ["bed"], registry=r)
        self.alerts_active = Gauge("synthsleep_alerts_active", "Alerts currently active", ["bed"], registry=r)
        self.bed_faulted = Gauge("synthsleep_bed_faulted", "1 while the bed is faulted (being retried)",
                                 ["bed"], registry=r)
        self.bed_faults = Counter("synthsleep_bed_faults", "Faults of the bed (stream, description, state, "
                                  "input)", ["bed"], registry=r)

    def add_bed(self, bed: str | int, event_types: Sequence[str] = EVENT_TYPES) -> None:
        """Create ``bed``'s series at their starting values, so that every series a dashboard or an
        alert rule reads exists from the start: counters and gauges 0, the stage -1 (unknown)."""
        bed = str(bed)
        for counter in (self.epochs, self.samples, self.gaps, self.bed_faults):
            counter.labels(bed).inc(0)
        for t in event_types:
            self.events.labels(bed, t).inc(0)
        for name in self.stage_names:
            self.stage_prob.labels(bed, name).set(0.0)
        self.stage.labels(bed).set(-1)
        for gauge in (self.apnea_prob, self.hypopnea_prob, self.lag, self.alerts_active, self.bed_faulted):
            gauge.labels(bed).set(0.0)
        self.ahi.labels(bed).set(math.nan)  # n/a until there is sleep with a respiratory sensor
        self.latency.labels(bed)
        self.epoch_latency.labels(bed)

    def observe_epoch(self, bed: str | int, stage_prob: Sequence[float], apnea_prob: float,
                      hypopnea_prob: float, stage_code: int | None = None,
                      latency_seconds: float | None = None, ahi: float | None = None,
                      epoch_latency_seconds: float | None = None) -> None:
        """Record one scored epoch of ``bed`` (probabilities in [0, 1], latencies in s).

        ``stage_code``: 0..4, or -1 for an unscored epoch; None = the most probable stage.
        ``latency_seconds``: the model step's time; ``epoch_latency_seconds``: end to end (epoch
        closed -> events written, state saved).
        """
        bed = str(bed)
        if stage_code is None:
            stage_code = max(range(len(self.stage_names)), key=lambda i: float(stage_prob[i]))
        self.epochs.labels(bed).inc()
        for name, p in zip(self.stage_names, stage_prob):
            self.stage_prob.labels(bed, name).set(float(p))
        self.stage.labels(bed).set(int(stage_code))
        self.apnea_prob.labels(bed).set(float(apnea_prob))
        self.hypopnea_prob.labels(bed).set(float(hypopnea_prob))
        if latency_seconds is not None:
            self.latency.labels(bed).observe(float(latency_seconds))
        if epoch_latency_seconds is not None:
            self.epoch_latency.labels(bed).observe(float(epoch_latency_seconds))
        self.ahi.labels(bed).set(math.nan if ahi is None else float(ahi))  # NaN = n/a, never 0

    def set_lag(self, bed: str | int, seconds: float) -> None:
        """The stream lag of ``bed``: now - newest sample's timestamp (s, LSL clock)."""
        self.lag.labels(str(bed)).set(float(seconds))

    def add_samples(self, bed: str | int, n: int) -> None:
        self.samples.labels(str(bed)).inc(int(n))

    def add_gap(self, bed: str | int, n: int = 1) -> None:
        self.gaps.labels(str(bed)).inc(int(n))

    def set_alerts_active(self, bed: str | int, n: int) -> None:
        self.alerts_active.labels(str(bed)).set(int(n))

    def set_bed_faulted(self, bed: str | int, faulted: bool) -> None:
        self.bed_faulted.labels(str(bed)).set(1 if faulted else 0)

    def add_bed_fault(self, bed: str | int) -> None:
        self.bed_faults.labels(str(bed)).inc()

    def write(self, events: Sequence[Event]) -> None:
        """Sink interface: count events by bed and type."""
        for ev in events:
            self.events.labels(ev.bed, ev.type).inc()

    def close(self) -> None:
        """Sink interface (nothing to release)."""


@dataclass
class MetricsServer:
    """A running metrics endpoint; ``url`` is ``http://host:port/metrics``."""

    host: str
    port: int
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Shut the server down and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry | MonitorMetrics, port: int = DEFAULT_PORT,
                         host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Args:
        registry: a CollectorRegistry or MonitorMetrics.
        port: TCP port; 0 picks a free one (read it from ``.port``).
        host: bind address; loopback unless the caller decides otherwise.

    Raises:
        OSError: the port is taken (message names host and port).
    """
    reg = registry.registry if isinstance(registry, MonitorMetrics) else registry
    try:
        server, thread = start_http_server(port, addr=host, registry=reg)
    except OSError as e:
        raise OSError(e.errno, f"cannot serve metrics on {host}:{port}: {e.strerror}") from None
    bound = int(server.server_address[1])
    served = MetricsServer(host, bound, server, thread)
    log.info("metrics at %s", served.url)
    return served
