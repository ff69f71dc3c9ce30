"""The ward view's web app (aiohttp), run in a background thread of the monitor.

Routes: ``/`` the page, ``/static/*`` its bundled JS/CSS (no CDN: hospital networks are
offline), ``/api/ward`` the JSON snapshot of :class:`~synthsleep.ward.state.WardState`,
``/api/stream`` the same snapshot as server-sent events, pushed whenever it changes.
Bound to 127.0.0.1 unless the caller decides otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .state import WardState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: the stream sends a changed snapshot at most this often (s), and a keep-alive comment when idle
PUSH_INTERVAL = 0.25
KEEPALIVE_SECONDS = 15.0


def make_app(state: WardState, push_interval: float = PUSH_INTERVAL,
             refresh: Callable[[], None] | None = None) -> web.Application:
    """The aiohttp application serving ``state``; ``refresh`` (if given) is called every
    ``push_interval`` s on the server's thread to update what no event reports (connections)."""
    app = web.Application()
    closing = asyncio.Event()

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def snapshot(_: web.Request) -> web.Response:
        return web.json_response(state.snapshot(), dumps=_dumps)

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        sent, idle = -1, 0.0
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while not closing.is_set():
                if state.version != sent:
                    snap = state.snapshot()
                    sent, idle = snap["version"], 0.0
                    await resp.write(f"id: {sent}\ndata: {_dumps(snap)}\n\n".encode())
                elif idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    await resp.write(b": keep-alive\n\n")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(closing.wait(), push_interval)
                idle += push_interval
        return resp

    async def on_shutdown(_: web.Application) -> None:
        closing.set()  # ends the open event streams and the refresher

    async def refresher(_: web.Application):
        async def loop() -> None:
            while not closing.is_set():
                try:
                    refresh()
                except Exception:  # a view must not die of what it shows
                    log.exception("ward view: refresh failed")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(closing.wait(), push_interval)

        task = asyncio.ensure_future(loop())
        yield
        closing.set()
        await task

    app.router.add_get("/", index)
    app.router.add_get("/api/ward", snapshot)
    app.router.add_get("/api/stream", stream)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_shutdown.append(on_shutdown)
    if refresh is not None:
        app.cleanup_ctx.append(refresher)
    return app


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class WardServer:
    """Serves a :class:`WardState` over HTTP from a daemon thread with its own event loop.

    Args:
        state: what to serve.
        host: bind address (loopback by default).
        port: TCP port; 0 picks a free one (read it from ``.port`` after :meth:`start`).
        refresh: called every push interval on the server's thread (see :func:`make_app`).
    """

    def __init__(self, state: WardState, host: str = "127.0.0.1", port: int = 0,
                 refresh: Callable[[], None] | None = None) -> None:
        self.state = state
        self.refresh = refresh
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> WardServer:
        """Bind and serve; returns once the port is open. Raises OSError when it cannot bind."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                self._runner = web.AppRunner(make_app(self.state, refresh=self.refresh), shutdown_timeout=2.0,
                                             access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port)
                loop.run_until_complete(site.start())
                self.port = int(self._runner.addresses[0][1])  # the bound port (port 0 picks one)
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name="synthsleep-ward", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise OSError(f"ward view did not start on {self.host}:{self.port} within {timeout:g} s")
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise OSError(exc.errno, f"cannot serve the ward view on {self.host}:{self.port}: {exc.strerror}")
            raise exc
        log.info("ward view at %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close open streams, free the port, end the thread."""
        if self._loop is None or self._runner is None or self._thread is None:
            return
        loop, self._loop = self._loop, None
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)


def serve_monitor(monitor: Any, host: str = "127.0.0.1", port: int = 0) -> WardServer:
    """Attach a :class:`WardState` of ``monitor``'s beds to its event hook and serve it; whether
    each bed's streams are attached is read from the monitor (one attribute per bed) meanwhile."""
    state = WardState(list(monitor.beds))
    monitor.observers.append(state.observe)

    def connections() -> None:
        for name, bed in list(monitor.beds.items()):
            state.set_connected(name, bed.stream is not None)

    return WardServer(state, host, port, refresh=connections).start()
