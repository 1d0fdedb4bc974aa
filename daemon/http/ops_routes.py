"""``GET /metrics`` (Prometheus text format) and ``GET /ready`` (readiness).

``/health`` says the process answers; ``/ready`` says it should get traffic: both doors
listen, it is not shutting down, the store is readable. 200 or 503, with the checks as JSON.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hfd.daemon.access.control import Access
from hfd.daemon.metrics import CONTENT_TYPE


def routes(access: Access) -> dict[str, Route]:
    """The routes answered from access control's state, by operation name (the table's
    ``ready`` and ``metrics`` rows; ``/metrics`` only with ``metrics_enabled``)."""
    ops = access

    async def metrics(request: Request) -> Response:
        return Response(ops.metrics.exposition(), media_type=CONTENT_TYPE)

    async def ready(request: Request) -> Response:
        ok, checks = ops.readiness()
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
        )

    out = {"ready": Route("/ready", ready, methods=["GET"])}
    if access.settings.metrics_enabled:
        out["metrics"] = Route("/metrics", metrics, methods=["GET"])
    return out
