"""The IPC door: a ZeroMQ ROUTER speaking the msgpack protocol of ``hfd.client.protocol``.

Each request runs in its own task, so one client can have many requests in flight and a slow
one never holds up another. All sends happen on the event loop's thread and never block
(``DONTWAIT``), which keeps the one socket's multipart messages whole without a lock.

Bad input never takes the door down: a message whose header cannot be read is logged and
dropped; one whose id can be read gets an ``error`` reply with a stable code.

A client that goes away is noticed in two ways. ZeroMQ does not tell a ROUTER about
disconnects, but with ``ROUTER_MANDATORY`` a send to a peer that is gone fails with
``EHOSTUNREACH``; a send to a peer that stopped reading fails with ``EAGAIN`` once its queue
(``SNDHWM``) is full, and after ``ipc_stall_timeout`` of that the request is cancelled. Well-
behaved clients also send ``cancel`` when they drop a stream.

Shutdown: new requests are answered with ``model_unavailable`` (``cancel`` still works), those
in flight get ``grace_period`` seconds, the rest are cancelled, then the socket file goes.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import zmq
import zmq.asyncio

from hfd.client.errors import (
    Cancelled,
    HfdError,
    InternalError,
    ModelUnavailable,
    ProtocolError,
    UnknownOperation,
)
from hfd.client.protocol import (
    KIND_CHUNK,
    KIND_END,
    KIND_ERROR,
    KIND_EVENT,
    KIND_RESULT,
    OP_CANCEL,
    Reply,
    Request,
    decode_request,
    encode_reply,
)
from hfd.daemon import reqctx, responses
from hfd.daemon.access.control import Access
from hfd.daemon.metrics import Metrics
from hfd.daemon.operations import BY_OP, Operation
from hfd.daemon.schema import parse
from hfd.daemon.service import Generation, Service
from hfd.daemon.settings import Settings
from hfd.daemon.zmq.droplog import DropLog
from hfd.daemon.zmq.frames import Receiver
from hfd.daemon.zmq.peers import PeerWatch, source_fd
from hfd.daemon.zmq.router import CLOSE_LINGER_MS, open_router

log = logging.getLogger(__name__)

# Raw frames a request may carry after its header (none of today's operations uses any).
MAX_PAYLOAD_FRAMES = 16
Key = tuple[bytes, str]  # (client identity, request id): ids are only unique per client


def _user_id(frame: zmq.Frame) -> str | None:
    """Who sent a message: the user id the peer check gave its connection (None without one)."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user if isinstance(user, str) and user else None


class PeerGone(Exception):
    """The client of a request disconnected or stopped reading."""


class IpcServer:
    def __init__(self, service: Service, settings: Settings, *, access: Access | None = None) -> None:
        self.service = service
        self.settings = settings
        self.endpoint = settings.ipc_endpoint()
        self._path = settings.ipc_socket()
        self._sock: zmq.asyncio.Socket | None = None
        self._peers: PeerWatch
        self._drops = DropLog()
        self._inflight: dict[Key, anyio.CancelScope] = {}
        self._stopping = anyio.Event()
        self._idle = anyio.Event()
        # Peer checks, scopes, metrics, usage: the daemon's one Access (hfd.daemon.app); a door
        # served alone (tests) gets its own.
        self._access = access if access is not None else Access(settings, Metrics())
        # The IPC dispatch, read from the one table of operations (hfd.daemon.operations).
        self._ops: dict[str, Operation] = {op: o for op, o in BY_OP.items() if o.call is not None}
        self._answer: dict[str, Callable[[bytes, Request, Operation], Awaitable[None]]] = {
            "unary": self._unary,
            "embedding": self._embedding,
            "generation": self._generation,
            "progress": self._progress,
        }

    # ----------------------------------------------------------------- lifecycle

    def _bind(self, ctx: zmq.asyncio.Context) -> zmq.asyncio.Socket:
        return open_router(ctx, self.settings, self._access, self._path, self.endpoint)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        ctx = zmq.asyncio.Context()
        try:
            sock = self._bind(ctx)
            peers = PeerWatch(sock)
        except BaseException:
            # destroy(), not term(): a socket a failed setup left open would make term() wait.
            ctx.destroy(linger=0)
            raise
        self._sock = sock
        self._peers = peers
        bound_inode = self._path.stat().st_ino
        log.info("ipc listening", extra={"endpoint": self.endpoint})
        try:
            async with anyio.create_task_group() as requests:
                async with anyio.create_task_group() as control:
                    control.start_soon(self._receive_loop, sock, requests)
                    control.start_soon(self._watch_peers, peers)
                    task_status.started(self.endpoint)
                    await self._stopping.wait()
                    with anyio.move_on_after(self.settings.grace_period):
                        while self._inflight:
                            self._idle = anyio.Event()
                            await self._idle.wait()
                    control.cancel_scope.cancel()
                for scope in list(self._inflight.values()):
                    scope.cancel()
        finally:
            self._sock = None
            peers.close()
            sock.close(linger=CLOSE_LINGER_MS)
            # term() waits (up to the linger) for final replies to leave: off the event loop,
            # so the HTTP door's own shutdown is not held up meanwhile.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(ctx.term)
            with contextlib.suppress(OSError):
                # Only our own file: a new daemon may already have bound the path again.
                if self._path.stat().st_ino == bound_inode:
                    self._path.unlink()
            log.info("ipc closed", extra={"endpoint": self.endpoint})

    def shutdown(self) -> None:
        """Stop taking requests; in-flight ones get the grace period; then ``serve()`` returns."""
        self._stopping.set()

    # ----------------------------------------------------------------- receiving

    async def _receive_loop(self, sock: zmq.asyncio.Socket, requests: anyio.abc.TaskGroup) -> None:
        # The identity frame, the header and the payload frames a request may carry.
        receiver = Receiver(sock, max_frames=1 + 1 + MAX_PAYLOAD_FRAMES)
        while True:
            parts, count = await receiver.receive()
            if count > receiver.max_frames:
                self._drops.drop(
                    "dropping an IPC message of too many frames",
                    frames=count - 1,
                    max_frames=MAX_PAYLOAD_FRAMES + 1,
                )
                continue
            if len(parts) < 2:
                continue  # an identity with nothing after it
            ident = parts[0].bytes
            # Disconnects first, so the descriptor this message came in on is current.
            self._cancel_gone(self._peers.drain())
            if self._peers.is_gone(ident):
                continue  # queued behind its sender's disconnect: nobody to answer
            self._peers.seen(ident, source_fd(parts[1]))
            message = [p.bytes for p in parts[1:]]
            user = _user_id(parts[1])
            try:
                # Bounded before anything is built: a header's cost is capped by its size and
                # item count, whoever sent it (the peer check already let the sender in).
                req = decode_request(
                    message,
                    max_header_bytes=self.settings.ipc_max_header_bytes,
                    max_items=self.settings.ipc_max_header_items,
                )
            except ProtocolError as exc:
                rid = exc.details.get("id")
                if isinstance(rid, str) and rid:
                    requests.start_soon(self._send_error, ident, rid, exc)
                else:
                    self._drops.drop(
                        "dropping an unreadable IPC message", error=exc.message, frames=len(message)
                    )
                continue
            except Exception:
                log.exception("dropping an IPC message that failed to decode")
                continue
            if req.op == OP_CANCEL:
                self._cancel(ident, req)
                continue
            key = (ident, req.id)
            if self._stopping.is_set():
                err = ModelUnavailable("the daemon is shutting down", retry_after=1.0)
                requests.start_soon(self._send_error, ident, req.id, err)
                continue
            if key in self._inflight:
                requests.start_soon(
                    self._send_error,
                    ident,
                    req.id,
                    ProtocolError(f"request id {req.id!r} is already in flight"),
                )
                continue
            # The scope exists before the task starts, so a cancel that arrives at once finds it.
            scope = anyio.CancelScope()
            self._inflight[key] = scope
            requests.start_soon(self._handle, ident, req, scope, user)

    async def _watch_peers(self, peers: PeerWatch) -> None:
        while True:
            self._cancel_gone(await peers.wait())

    def _cancel_gone(self, idents: list[bytes]) -> None:
        """Cancel every request in flight of clients whose connection ended."""
        if not idents:
            return
        gone = set(idents)
        keys = [key for key in self._inflight if key[0] in gone]
        for key in keys:
            self._inflight[key].cancel()
        if keys:
            log.info(
                "client disconnected; its requests are cancelled",
                extra={"requests": len(keys), "ids": [rid for _, rid in keys][:10]},
            )

    def _cancel(self, ident: bytes, req: Request) -> None:
        target = req.body.get("id")
        if not isinstance(target, str):
            log.warning("ignoring a cancel without a request id", extra={"id": req.id})
            return
        scope = self._inflight.get((ident, target))
        if scope is not None:
            log.info("request cancelled by its client", extra={"id": target})
            scope.cancel()

    async def _handle(
        self, ident: bytes, req: Request, scope: anyio.CancelScope, user: str | None = None
    ) -> None:
        key = (ident, req.id)
        rctx = self._access.begin("ipc", req.op, request_id=req.id)
        status = 200
        try:
            with scope, reqctx.bind(rctx):
                self._access.authorize_ipc(rctx, user, req.op, req.body)
                operation = self._ops.get(req.op)
                if operation is None:
                    raise UnknownOperation(
                        f"unknown operation {req.op!r}; known: {', '.join(sorted(self._ops))}"
                    )
                await self._answer[operation.kind](ident, req, operation)
            if scope.cancelled_caught:
                status = Cancelled.status
                await self._send_error(ident, req.id, Cancelled("the request was cancelled"))
        except PeerGone as exc:
            status = Cancelled.status
            log.info(
                "client went away; request cancelled", extra={"id": req.id, "op": req.op, "why": str(exc)}
            )
        except Exception as exc:
            status = exc.status if isinstance(exc, HfdError) else 500
            await self._send_error(ident, req.id, exc, op=req.op)
        finally:
            self._access.finish(rctx, status)
            self._inflight.pop(key, None)
            if not self._inflight:
                self._idle.set()

    # ----------------------------------------------------------------- sending

    async def _send(self, ident: bytes, reply: Reply) -> None:
        sock = self._sock
        if sock is None:
            raise PeerGone("the socket is closed")
        frames = [ident, *encode_reply(reply)]
        delay = 0.001
        deadline: float | None = None
        while True:
            try:
                await sock.send_multipart(frames, flags=zmq.DONTWAIT)
                return
            except zmq.Again:
                now = anyio.current_time()
                if deadline is None:
                    deadline = now + max(0.0, self.settings.ipc_stall_timeout)
                if now >= deadline:
                    raise PeerGone(
                        f"the client read nothing for {self.settings.ipc_stall_timeout:g}s"
                    ) from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    raise PeerGone("the client disconnected") from None
                raise

    async def _send_error(self, ident: bytes, rid: str, exc: BaseException, *, op: str = "") -> None:
        if isinstance(exc, HfdError):
            err = exc
        else:
            log.error(
                "unexpected error while serving an IPC request",
                exc_info=(type(exc), exc, exc.__traceback__),
                extra={"id": rid, "op": op},
            )
            err = InternalError("internal error; the daemon's log has the details")
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._send(ident, Reply(id=rid, kind=KIND_ERROR, body=err.to_dict()))
        except PeerGone:
            pass
        except zmq.ZMQError as send_exc:
            log.warning("could not send an IPC error reply", extra={"id": rid, "error": str(send_exc)})

    async def _result(
        self, ident: bytes, req: Request, body: dict[str, Any], frames: list[bytes] | None = None
    ) -> None:
        await self._send(ident, Reply(id=req.id, kind=KIND_RESULT, body=body, frames=frames or []))

    # ----------------------------------------------------------------- operations, by kind

    def _parse(self, req: Request, operation: Operation) -> Any:
        return parse(operation.request, req.body) if operation.request is not None else req.body

    async def _unary(self, ident: bytes, req: Request, operation: Operation) -> None:
        assert operation.call is not None
        body = operation.call(self.service, self._parse(req, operation))
        if inspect.isawaitable(body):
            body = await body
        await self._result(ident, req, body)

    async def _embedding(self, ident: bytes, req: Request, operation: Operation) -> None:
        assert operation.call is not None
        result = await operation.call(self.service, self._parse(req, operation))
        body, frame = responses.embeddings_header(result)
        await self._result(ident, req, body, [frame])

    async def _progress(self, ident: bytes, req: Request, operation: Operation) -> None:
        """Progress as ``event`` messages (with ``stream``), then the ``result``."""
        assert operation.call is not None
        body = self._parse(req, operation)

        async def emit(event: dict[str, Any]) -> None:
            await self._send(ident, Reply(id=req.id, kind=KIND_EVENT, body=event))

        result = await operation.call(self.service, body, emit if body.stream else None)
        await self._result(ident, req, result)

    async def _generation(self, ident: bytes, req: Request, operation: Operation) -> None:
        assert operation.call is not None and operation.reply is not None
        request = self._parse(req, operation)
        gen: Generation = await operation.call(self.service, request)
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            await self._stream(ident, req, gen, operation.reply.chunks(gen, include_usage=usage))
        else:
            async with gen:
                text = await gen.text()
            await self._result(ident, req, operation.reply.whole(gen, text))

    async def _stream(
        self, ident: bytes, req: Request, gen: Generation, chunks: AsyncIterator[dict[str, Any]]
    ) -> None:
        """Send each chunk as a ``chunk`` message, then ``end`` with the usage."""
        try:
            async for chunk in chunks:
                await self._send(ident, Reply(id=req.id, kind=KIND_CHUNK, body=chunk))
            await self._send(ident, Reply(id=req.id, kind=KIND_END, body=responses.stream_end(gen)))
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await gen.aclose()
