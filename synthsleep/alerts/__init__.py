"""Events, alert rules, sinks and metrics of the live monitor (no torch on this path).

- :mod:`~synthsleep.alerts.events`: ``Event``, ``EventDetector`` (per bed, one epoch at a time)
- :mod:`~synthsleep.alerts.rules`: ``load_rules``, ``AlertEngine`` (hysteresis, de-duplication)
- :mod:`~synthsleep.alerts.sinks`: ``Sink``, ``JsonlSink``, ``LslMarkerSink``
- :mod:`~synthsleep.alerts.metrics`: ``MonitorMetrics``, ``start_metrics_server``
"""

from synthsleep.alerts.events import EVENT_TYPES, EpochSummary, Event, EventDetector, EventError
from synthsleep.alerts.rules import AlertEngine, Rule, RuleError, load_rules
from synthsleep.alerts.sinks import JsonlSink, LslMarkerSink, Sink, SinkError, read_events

__all__ = [
    "EVENT_TYPES", "Event", "EventDetector", "EventError", "EpochSummary",
    "AlertEngine", "Rule", "RuleError", "load_rules",
    "JsonlSink", "LslMarkerSink", "Sink", "SinkError", "read_events",
]
