"""Alert rules, sinks and metrics of the live monitor, downstream of the events
(:mod:`synthsleep.events`: ``Event``, ``EventDetector``, per bed, one epoch at a time); no torch
on this path.

- :mod:`~synthsleep.alerts.rules`: ``load_rules``, ``AlertEngine`` (hysteresis, de-duplication)
- :mod:`~synthsleep.alerts.sinks`: ``Sink``, ``JsonlSink``, ``LslMarkerSink``
- :mod:`~synthsleep.alerts.metrics`: ``MonitorMetrics``, ``start_metrics_server``
"""

from synthsleep.alerts.rules import AlertEngine, Rule, RuleError, load_rules
from synthsleep.alerts.sinks import JsonlSink, LslMarkerSink, Sink, SinkError, read_events

__all__ = [
    "AlertEngine", "Rule", "RuleError", "load_rules",
    "JsonlSink", "LslMarkerSink", "Sink", "SinkError", "read_events",
]
