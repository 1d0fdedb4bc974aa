"""``GET /metrics`` (Prometheus text format) and ``GET /ready`` (readiness).

``/health`` says the process answers; ``/ready`` says it should get traffic: both doors
listen, it is not shutting down, the store is readable. 200 or 503, with the checks as JSON.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.daemon.metrics import CONTENT_TYPE
from hfd.daemon.ops import ops_for


def routes(service: Any) -> list[Route]:
    ops = ops_for(service)

    async def metrics(request: Request) -> Response:
        return Response(ops.metrics.exposition(), media_type=CONTENT_TYPE)

    async def ready(request: Request) -> Response:
        ok, checks = ops.readiness()
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
        )

    out = [Route("/ready", ready, methods=["GET"])]
    if service.settings.metrics_enabled:
        out.append(Route("/metrics", metrics, methods=["GET"]))
    return out
