"""The one error tree, shared by the daemon and the client.

Every error has a stable machine-readable ``code`` (what clients branch on), an HTTP status
(what the HTTP door answers with) and an OpenAI error ``type``. Transports map errors in one
place each: ``hfd.daemon.http.errors`` and ``hfd.daemon.zmq.server``; the client rebuilds the
same class from the code it receives, so ``except ModelNotFound`` works on both sides.

    HfdError
    ├── InvalidRequest            400 invalid_request
    │   ├── InvalidJSON           400 invalid_json
    │   ├── ProtocolError         400 protocol_error
    │   ├── UnknownOperation      400 unknown_operation
    │   ├── ContextLengthExceeded 400 context_length_exceeded
    │   └── ValidationFailed      400 validation_error    (wrong type, missing field, out of range)
    ├── PayloadTooLarge           413 payload_too_large
    ├── RequestTimeout            408 request_timeout     (headers or body too slow to arrive)
    ├── Unauthorized              401 unauthorized
    ├── Forbidden                 403 forbidden
    ├── NotFound                  404 not_found
    │   └── ModelNotFound         404 model_not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── Overloaded                429 overloaded          (queue full; has retry_after)
    ├── RateLimited               429 rate_limited        (per-key limit; has retry_after)
    ├── ModelUnavailable          503 model_unavailable   (breaker open / cannot load; retry_after)
    ├── InsufficientMemory        507 insufficient_memory
    ├── InsufficientStorage       507 insufficient_storage (the store's disk is full)
    ├── FetchError                502 fetch_failed
    │   └── VerificationFailed    502 verification_failed
    ├── Cancelled                 499 cancelled
    ├── Timeout                   504 timeout
    ├── DaemonUnavailable         503 daemon_unavailable  (client side: nothing listening)
    ├── NotSupported              501 not_supported       (a feature this build or box lacks)
    └── InternalError             500 internal_error
        ├── KeyStoreError         500 keystore_error      (the API key database cannot be read or written)
        ├── CurveKeyError         500 invalid_curve_key   (a CURVE key file is missing, malformed or unsafe)
        └── UsageLogError         500 usage_log_error     (the usage log cannot be opened)

A module raises the tree's class under its own name where that reads better (the daemon's
``hfd.daemon.access.keys.KeyStoreError`` is this ``KeyStoreError``); no error class lives
outside this file, so every code the daemon sends is one the client can rebuild.
"""

from __future__ import annotations

from typing import Any, ClassVar


def _error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    named = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
    return named.get(status, "invalid_request_error" if status < 500 else "server_error")


class HfdError(Exception):
    """The root of the tree. A subclass names its ``code`` and, where it differs from its
    parent's, its ``status`` (``class NotFound(HfdError, code="not_found", status=404)``); the
    OpenAI ``type`` follows from the status."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status
            cls.type = _error_type(status)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The error as the OpenAI envelope's inner object (also the IPC error body)."""
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": self.param,
        }
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidRequest(HfdError, code="invalid_request", status=400): ...


class InvalidJSON(InvalidRequest, code="invalid_json"): ...


class ProtocolError(InvalidRequest, code="protocol_error"): ...


class UnknownOperation(InvalidRequest, code="unknown_operation"): ...


class ContextLengthExceeded(InvalidRequest, code="context_length_exceeded"): ...


class ValidationFailed(InvalidRequest, code="validation_error"):
    """400, as OpenAI answers a body that fails validation (wrong type, missing field, value out
    of range), so code catching the SDK's BadRequestError catches it; the code stays."""


class PayloadTooLarge(HfdError, code="payload_too_large", status=413): ...


class RequestTimeout(HfdError, code="request_timeout", status=408): ...


class Unauthorized(HfdError, code="unauthorized", status=401): ...


class Forbidden(HfdError, code="forbidden", status=403): ...


class NotFound(HfdError, code="not_found", status=404): ...


class ModelNotFound(NotFound, code="model_not_found"): ...


class MethodNotAllowed(HfdError, code="method_not_allowed", status=405): ...


class Overloaded(HfdError, code="overloaded", status=429): ...


class RateLimited(HfdError, code="rate_limited", status=429): ...


class ModelUnavailable(HfdError, code="model_unavailable", status=503): ...


class InsufficientMemory(HfdError, code="insufficient_memory", status=507): ...


class InsufficientStorage(HfdError, code="insufficient_storage", status=507): ...


class FetchError(HfdError, code="fetch_failed", status=502): ...


class VerificationFailed(FetchError, code="verification_failed"): ...


class Cancelled(HfdError, code="cancelled", status=499): ...


class Timeout(HfdError, code="timeout", status=504): ...


class DaemonUnavailable(HfdError, code="daemon_unavailable", status=503): ...


class NotSupported(HfdError, code="not_supported", status=501): ...


class InternalError(HfdError, code="internal_error", status=500): ...


class KeyStoreError(InternalError, code="keystore_error"):
    """The API key database cannot be read or written."""


class CurveKeyError(InternalError, code="invalid_curve_key"):
    """A CURVE key file is missing, malformed or unsafe."""


class UsageLogError(InternalError, code="usage_log_error"):
    """The usage log cannot be opened or written."""


def _all_subclasses(cls: type[HfdError]) -> list[type[HfdError]]:
    out: list[type[HfdError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_KNOWN: list[type[HfdError]] = [HfdError, *_all_subclasses(HfdError)]
ERRORS_BY_CODE: dict[str, type[HfdError]] = {c.code: c for c in _KNOWN}


def error_from_dict(body: dict[str, Any]) -> HfdError:
    """Rebuild the error a peer sent (IPC error body or the OpenAI envelope's inner object)."""
    cls = ERRORS_BY_CODE.get(str(body.get("code")), HfdError)
    err = cls(
        str(body.get("message", "unknown error")),
        param=body.get("param"),
        retry_after=body.get("retry_after"),
        details=body.get("details") or None,
    )
    return err
