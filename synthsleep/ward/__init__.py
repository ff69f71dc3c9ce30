"""The ward view: a live web page of every bed, served by the monitor on 127.0.0.1.

``state.WardState`` holds the ward's per-bed snapshot (framework-free, fed by the monitor after
every scored epoch); ``server`` serves it (aiohttp, in a background thread) with the bundled
page under ``static/`` and live updates by server-sent events.
"""

from .state import WardState

__all__ = ["WardState"]
