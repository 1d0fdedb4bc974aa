"""Access control and observability around the doors, in one object per daemon.

The composition root (``hfd.daemon.app``) makes the one :class:`Access` and hands it to both
doors; the daemon's lifecycle starts and closes it:

- before the doors open: :meth:`Access.check_startup` (keys required but none, bad CURVE keys)
  and :meth:`Access.start` (the usage log's writer);
- per request: :meth:`Access.begin` / :meth:`Access.authorize` / :meth:`Access.finish` (the
  HTTP middleware and the IPC server call these);
- the IPC door's sockets: :meth:`Access.secure_ipc` before binding ``ipc://``,
  :meth:`Access.bind_tcp` for the optional CURVE-protected TCP endpoint;
- :meth:`Access.mark_ready` / :meth:`Access.mark_stopping` for ``GET /ready``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import anyio
import anyio.abc
import zmq

from hfd.client.errors import HfdError, RateLimited
from hfd.daemon import reqctx
from hfd.daemon.access.auth import ANONYMOUS, Authenticator, Principal, scope_for_ipc
from hfd.daemon.access.keys import KeyStore
from hfd.daemon.access.peercred import PeerPolicy
from hfd.daemon.access.ratelimit import RateLimiter
from hfd.daemon.access.usage import UsageLog, UsageRecord
from hfd.daemon.access.zap import CurveClients, ZapAuthenticator, load_server_secret
from hfd.daemon.metrics import Metrics
from hfd.daemon.reqctx import RequestContext
from hfd.daemon.settings import Settings

log = logging.getLogger(__name__)

# Routes that are probes, not usage: counted in metrics, not written to the usage log. The web
# page's files and the log's own reader are not usage either (the page polls it while open).
_NOT_USAGE = frozenset(
    {"/health", "/ready", "/metrics", "/openapi.json", "/", "/web/{path:path}", "/api/usage/recent"}
)


class Access:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        s = settings
        self.keys = KeyStore(s.state_dir)
        self.auth = Authenticator(s, self.keys)
        self.limiter = RateLimiter()
        self.metrics = metrics
        self.usage: UsageLog | None = None
        if s.usage_enabled:
            self.usage = UsageLog(
                s.state_dir,
                flush_records=s.usage_flush_records,
                flush_seconds=s.usage_flush_seconds,
                max_queue=s.usage_queue_max,
                retention_days=s.usage_retention_days,
                on_drop=metrics.usage_dropped.inc,
            )
        self._zap: ZapAuthenticator | None = None
        self._zap_lock = threading.Lock()
        self._started = False
        self.ready = False
        self.stopping = False

    # ------------------------------------------------------------------ lifecycle

    def check_startup(self) -> None:
        """Raise SettingsError/HfdError for a configuration the daemon must not start with."""
        self.auth.check_startup()
        s = self.settings
        if s.ipc_tcp:
            assert (
                s.ipc_curve_secret_key is not None and s.ipc_curve_clients_dir is not None
            )  # settings checked
            load_server_secret(s.ipc_curve_secret_key)
            if not s.ipc_curve_clients_dir.is_dir():
                raise HfdError(f"ipc_curve_clients_dir {s.ipc_curve_clients_dir} is not a directory")
        self.peer_policy()  # unknown user or group names fail here, not at the first connection

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """A task in the daemon's task group: starts the usage writer; when the group ends
        (shutdown or a crash), writes what is still queued."""
        self.start()
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close)

    def start(self) -> None:
        if self.usage is not None and not self._started:
            self.usage.start()
        self._started = True

    def mark_ready(self) -> None:
        self.ready = True

    def mark_stopping(self) -> None:
        self.stopping = True

    def close(self) -> None:
        if self.usage is not None and self._started:
            self.usage.close()
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        self._started = False

    # ------------------------------------------------------------------ the IPC door's sockets

    def peer_policy(self) -> PeerPolicy | None:
        s = self.settings
        if not s.ipc_peer_check:
            return None
        groups = s.ipc_allowed_groups or ((s.ipc_group,) if s.ipc_group else ())
        return PeerPolicy.from_names(s.ipc_allowed_users, groups)

    def _authenticator(self, context: zmq.Context[Any]) -> ZapAuthenticator:
        with self._zap_lock:
            if self._zap is None or not self._zap.serves(context):
                if self._zap is not None:  # a new context (the IPC door restarted in-process)
                    self._zap.stop()
                s = self.settings
                clients = (
                    CurveClients(s.ipc_curve_clients_dir) if s.ipc_tcp and s.ipc_curve_clients_dir else None
                )
                zap = ZapAuthenticator(
                    context,
                    peers=self.peer_policy(),
                    curve_clients=clients,
                    on_refuse=self.metrics.ipc_refused.inc,
                )
                zap.start()
                self._zap = zap
            return self._zap

    def secure_ipc(self, sock: zmq.Socket[Any]) -> None:
        """Call before ``sock.bind("ipc://...")``: every connection then passes the peer check."""
        if not self.settings.ipc_peer_check:
            return
        self._authenticator(sock.context).secure_ipc(sock)

    def bind_tcp(self, sock: zmq.Socket[Any]) -> str | None:
        """Bind the CURVE-protected TCP endpoint on the IPC door's socket, when configured;
        returns the bound endpoint. Call after the ``ipc://`` bind (options apply per bind)."""
        s = self.settings
        if not s.ipc_tcp:
            return None
        assert s.ipc_curve_secret_key is not None
        _public, secret = load_server_secret(s.ipc_curve_secret_key)
        self._authenticator(sock.context).secure_tcp(sock, secret)
        try:
            sock.bind(s.ipc_tcp)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind the IPC door's TCP endpoint {s.ipc_tcp}: {exc}") from exc
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("ipc tcp listening", extra={"endpoint": endpoint})
        return endpoint

    @property
    def connections_refused(self) -> int:
        return self._zap.refused if self._zap is not None else 0

    # ------------------------------------------------------------------ per request

    async def fresh_keys(self) -> None:
        """Re-read the keys if another process changed them (a stat when nothing changed)."""
        if self.keys.changed():
            await anyio.to_thread.run_sync(self.keys.refresh)

    def begin(self, door: str, route: str, *, request_id: str | None = None) -> RequestContext:
        """A request arrived; pair with exactly one :meth:`finish`."""
        self.metrics.in_flight.labels(door).inc()
        return RequestContext(request_id=reqctx.new_request_id(request_id), door=door, route=route)

    def authorize(
        self, ctx: RequestContext, principal: Principal, scope: str | None, model: str | None
    ) -> None:
        """Check scope and model for the principal and count it against its rate limit."""
        ctx.principal = principal
        if model and not ctx.model:
            ctx.model = model
        try:
            principal.require(scope, model)
        except HfdError:
            self.metrics.auth_failures.labels(ctx.door, "forbidden").inc()
            raise
        if principal.limited and principal.key_id is not None:
            try:
                self.limiter.admit(principal.key_id, principal.limits)
            except RateLimited:
                self.metrics.rate_limited.labels(ctx.door).inc()
                raise

    def ipc_principal(self, user_id: str | None) -> Principal:
        return self.auth.ipc(user_id)

    def authorize_ipc(
        self, ctx: RequestContext, user_id: str | None, op: str, body: dict[str, Any]
    ) -> Principal:
        """The IPC door's one call per request: who sent it, and may they."""
        principal = self.auth.ipc(user_id)
        model = body.get("model") if isinstance(body.get("model"), str) else None
        self.authorize(ctx, principal, scope_for_ipc(op), model)
        return principal

    def finish(self, ctx: RequestContext, status: int, *, route: str | None = None) -> None:
        """Record a finished request: metrics, the key's token usage, the usage log."""
        route = route or ctx.route
        seconds = time.perf_counter() - ctx.started
        m = self.metrics
        m.in_flight.labels(ctx.door).dec()
        try:
            m.record_request(ctx.door, route, ctx.model, status, seconds)
            if ctx.prompt_tokens or ctx.completion_tokens:
                m.record_tokens(ctx.model, ctx.prompt_tokens, ctx.completion_tokens)
            if ctx.ttft is not None:
                m.record_ttft(ctx.door, ctx.model, ctx.ttft)
        except Exception:  # metrics must never fail a request
            log.exception("metrics: recording failed")
        principal: Principal = ctx.principal or ANONYMOUS
        # The access log: failures at info (journald keeps them), the rest at debug.
        log.log(
            logging.INFO if status >= 400 else logging.DEBUG,
            "request",
            extra={
                "door": ctx.door,
                "route": route,
                "model": ctx.model,
                "status": status,
                "key": principal.label,
                "ms": round(seconds * 1000.0, 3),
                "prompt_tokens": ctx.prompt_tokens,
                "completion_tokens": ctx.completion_tokens,
            },
        )
        if principal.key_id is not None and principal.limits.tpm > 0:
            self.limiter.charge(principal.key_id, principal.limits, ctx.prompt_tokens + ctx.completion_tokens)
        if self.usage is not None and self._started and route not in _NOT_USAGE:
            self.usage.record(
                UsageRecord(
                    ts=time.time(),
                    request_id=ctx.request_id,
                    door=ctx.door,
                    key=principal.label,
                    model=(ctx.model or "")[:256],
                    route=route,
                    status=status,
                    prompt_tokens=ctx.prompt_tokens,
                    completion_tokens=ctx.completion_tokens,
                    latency_ms=round(seconds * 1000.0, 3),
                )
            )

    # ------------------------------------------------------------------ readiness

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the daemon takes traffic: both doors listen (the lifecycle said so), not
        shutting down, and the model store and cache directory are readable."""
        s = self.settings
        checks: dict[str, Any] = {
            "doors": self.ready,
            "stopping": self.stopping,
            "ipc_socket": s.ipc_socket().exists(),
            # The store keeps its models under <state_dir>/models once it has any.
            "store": os.access(
                s.state_dir / "models" if (s.state_dir / "models").exists() else s.state_dir,
                os.R_OK | os.X_OK,
            ),
            "cache_dir": os.access(s.cache_dir, os.R_OK | os.X_OK),
        }
        ok = bool(
            checks["doors"]
            and not checks["stopping"]
            and checks["ipc_socket"]
            and checks["store"]
            and checks["cache_dir"]
        )
        return ok, checks
