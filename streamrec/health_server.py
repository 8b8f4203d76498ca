"""The worker's HTTP endpoints: Prometheus metrics, liveness and readiness (opt-in port).

``STREAMREC_METRICS_PORT`` turns it on (``STREAMREC_METRICS_HOST``, default
``127.0.0.1``: only this machine can reach it). It runs on the worker's own
event loop (aiohttp), so an answer also proves the loop is not blocked.

``GET /metrics``
    every metric of :mod:`streamrec.metrics` in Prometheus' text format;
``GET /healthz``
    liveness: 200 while the event loop answers and the worker's background
    task (Redis retries, idle checkpoints) runs, else 503;
``GET /readyz``
    readiness: 200 once the agent has started, the consumer holds partitions
    and the last Redis write succeeded, else 503 with the reasons.

Both health answers are JSON: ``{"status": "ok" | "failing", "checks": {...}}``.

Examples
--------
>>> import asyncio, urllib.request
>>> from streamrec.metrics import WorkerMetrics, WorkerState
>>> async def main():
...     server = HealthServer(WorkerMetrics(), lambda: WorkerState(started=True, assigned=1), port=0)
...     await server.start()
...     url = f"http://127.0.0.1:{server.port}"
...     ready = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/readyz").read())
...     text = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/metrics").read())
...     await server.stop()
...     return ready, b"streamrec_up 1.0" in text
>>> asyncio.run(main())
(b'{"status": "ok", "checks": {"started": true, "partitions_assigned": true, "redis_writes": true}}', True)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamrec.metrics import WorkerMetrics, WorkerState

__all__ = ["HealthServer"]

log = logging.getLogger("streamrec.health")


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for one worker.

    Parameters
    ----------
    metrics
        The worker's metrics.
    state
        Returns the worker's current state (gauges and readiness come from it).
    host, port
        Where to listen; port ``0`` picks a free one (see :attr:`port` after :meth:`start`).
    alive
        Returns whether the worker's background work still runs (liveness).
    """

    def __init__(
        self,
        metrics: WorkerMetrics,
        state: Callable[[], WorkerState],
        host: str = "127.0.0.1",
        port: int = 9187,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        self.metrics = metrics
        self.state = state
        self.host = host
        self.port = port
        self.alive = alive or (lambda: True)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.update(self.state())
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _answer(checks: dict[str, bool]) -> web.Response:
        ok = all(checks.values())
        body = json.dumps({"status": "ok" if ok else "failing", "checks": checks})
        return web.Response(text=body, status=200 if ok else 503, content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._answer({"event_loop": True, "background_task": self.alive()})

    async def _readyz(self, request: web.Request) -> web.Response:
        state = self.state()
        return self._answer(
            {"started": state.started, "partitions_assigned": state.assigned > 0, "redis_writes": state.redis_ok}
        )
