"""The HTTP metrics middleware: Litestar's Prometheus metrics, at a fraction of their cost per request.

Litestar's ``PrometheusMiddleware`` builds a ``Request`` and looks its labelled series up four times
for every request (each lookup takes a lock and builds a tuple). This one reports the very same
series — names, help, labels and values — and looks each one up once per route, method and status.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

#: (method, path, status) → the labelled series a finished request moves: requests and duration.
_Series = tuple[Any, Any]


class LeanPrometheusMiddleware(PrometheusMiddleware):
    """``PrometheusMiddleware`` with its series looked up once per route, method and status."""

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        self._finished: dict[tuple[str, str, int], _Series] = {}
        self._running: dict[tuple[str, str], Any] = {}
        # Options this lean path does not implement take the library's own path instead.
        self._plain = not (config.labels or config.exemplars or config.excluded_http_methods)

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    def _series(self, method: str, path: str, status: int) -> _Series:
        key = (method, path, status)
        found = self._finished.get(key)
        if found is None:
            labels = self._labels(method, path, status)
            values = list(labels.values())
            found = (self.request_count(labels).labels(*values), self.request_time(labels).labels(*values))
            self._finished[key] = found
        return found

    def _in_progress(self, method: str, path: str) -> Any:
        gauge = self._running.get((method, path))
        if gauge is None:
            labels = self._labels(method, path, 200)
            gauge = self._running[(method, path)] = self.requests_in_progress(labels).labels(*labels.values())
        return gauge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._plain:
            await super().__call__(scope, receive, send)
            return
        method = scope["method"] if scope["type"] == ScopeType.HTTP else scope["type"]
        path = scope["path_template"] if self._config.group_path else scope["path"]
        started = time.perf_counter()
        status, ended = 200, started

        async def answered(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                ended = time.perf_counter()
            await send(message)

        running = self._in_progress(method, path)
        running.inc()
        try:
            await self.app(scope, receive, answered)
        finally:
            running.dec()
            count, duration = self._series(method, path, status)
            if status >= HTTP_500_INTERNAL_SERVER_ERROR:  # its series made on the first error, as Litestar does
                labels = self._labels(method, path, status)
                self.requests_error_count(labels).labels(*labels.values()).inc()
            count.inc()
            duration.observe(ended - started)


def prometheus_config() -> PrometheusConfig:
    """The HTTP metrics of every role: ``blackboard_http_*``, by route template, method and status."""
    return PrometheusConfig(app_name="blackboard", prefix="blackboard_http", group_path=True,
                            exclude=["/metrics", "/health"], middleware_class=LeanPrometheusMiddleware)
