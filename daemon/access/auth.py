"""Who may use what.

A request is made by a :class:`Principal`:

- an API key (HTTP ``Authorization: Bearer hfd-...``, or ``x-api-key: hfd-...`` as Anthropic's
  SDK sends it): the key's scopes, model allow-list and rate limits;
- a local user on the IPC socket (``uid:<n>``, vouched for by the kernel through the peer
  check in :mod:`hfd.daemon.access.zap`): every scope, like a user who may open the socket file;
- a CURVE client on the IPC door's TCP endpoint: the scopes in ``ipc_tcp_scopes``;
- anonymous: HTTP without a key where keys are not required (loopback by default).

The loopback rule: ``auth_required = "auto"`` requires a key when the HTTP door binds beyond
loopback (then also for clients on the same box: a local reverse proxy must not open the door
to the network), and lets loopback clients in without one. A daemon that requires keys but
has none refuses to start: nobody could use it, which is a configuration mistake.

Scopes: ``inference`` (embeddings, chat, completions, listing models), ``models`` (load,
unload, pull), ``admin`` (keys, stats, metrics when keys are required). Each operation's
scope is a column of the one table (``hfd.daemon.operations``); what is not in it needs
``admin``, so a new route is closed until its row names a scope.
"""

from __future__ import annotations

import ipaddress
import pwd
from dataclasses import dataclass, field

from hfd.client.errors import Forbidden, Unauthorized
from hfd.daemon.access.keys import (
    ALL_SCOPES,
    KEY_PREFIX,
    SCOPE_ADMIN,
    ApiKey,
    KeyStore,
    parse_scopes,
)
from hfd.daemon.access.ratelimit import Limits
from hfd.daemon.access.zap import USER_CURVE_PREFIX, USER_UID_PREFIX
from hfd.daemon.operations import BY_NAME, OPERATIONS
from hfd.daemon.settings import Settings, SettingsError

OPEN = None  # a route anyone may call (as hfd.daemon.operations.OPEN)


@dataclass(frozen=True)
class Principal:
    kind: str  # "key" | "local" | "curve" | "anonymous"
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None  # None: every model
    key_id: str | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def label(self) -> str:
        """How the usage log and ``hfd stats --by key`` name this principal."""
        return self.name if self.kind in ("key", "anonymous") else f"{self.kind}:{self.name}"

    @property
    def limited(self) -> bool:
        return self.key_id is not None and (self.limits.rpm > 0 or self.limits.tpm > 0)

    def require(self, scope: str | None, model: str | None = None) -> None:
        """Raise Forbidden unless this principal may use ``scope`` (and ``model``)."""
        if scope is not None and scope not in self.scopes:
            raise Forbidden(
                f"this {'key' if self.kind == 'key' else 'client'} lacks the {scope!r} scope",
                details={"scope": scope},
            )
        if model and self.models is not None and model not in self.models:
            raise Forbidden(f"this key may not use model {model!r}", param="model", details={"model": model})

    @classmethod
    def from_key(cls, key: ApiKey) -> Principal:
        return cls(
            kind="key",
            name=key.name,
            scopes=key.scopes,
            models=key.models,
            key_id=key.id,
            limits=Limits(rpm=key.rpm, tpm=key.tpm),
        )


ANONYMOUS = Principal(kind="anonymous", name="anonymous", scopes=ALL_SCOPES)


# ----------------------------------------------------------------------------- scopes

# Read from the one table of operations: a route or op not in it needs ``admin``.
_HTTP_EXACT: dict[str, str | None] = {}
_HTTP_PREFIXES: list[tuple[str, str | None]] = []  # templates with a path parameter
for _op in OPERATIONS:
    for _method, _path in _op.http:
        if "{" in _path:
            _HTTP_PREFIXES.append((_path[: _path.index("{")], _op.scope))
        else:
            _HTTP_EXACT[_path] = _op.scope
_IPC_SCOPES: dict[str, str | None] = {o.op: o.scope for o in OPERATIONS if o.op is not None}
# Paths used as metrics labels even when a request was refused before routing.
KNOWN_PATHS = frozenset(_HTTP_EXACT)
_METRICS = BY_NAME["metrics"].http[0][1]


def scope_for_http(method: str, path: str, *, metrics_public: bool = False) -> str | None:
    """The scope an HTTP route needs (None: open to anyone)."""
    if method == "OPTIONS":
        return OPEN
    if path == _METRICS and metrics_public:
        return OPEN
    if path in _HTTP_EXACT:
        return _HTTP_EXACT[path]
    for prefix, scope in _HTTP_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return scope
    return SCOPE_ADMIN


def scope_for_ipc(op: str) -> str | None:
    return _IPC_SCOPES.get(op, SCOPE_ADMIN)


# ----------------------------------------------------------------------------- loopback rule


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def keys_required(settings: Settings) -> bool:
    """Whether the HTTP door requires an API key on every request but the open ones."""
    mode = settings.auth_required.strip().lower()
    if mode in ("true", "yes", "1", "on"):
        return True
    if mode in ("false", "no", "0", "off"):
        return False
    if settings.http_unix_socket is not None:
        return False  # reachable only through the file system, like the IPC socket
    return not is_loopback(settings.http_host)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Authenticator:
    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys
        self.required = keys_required(settings)
        self.tcp_scopes = parse_scopes(settings.ipc_tcp_scopes) if settings.ipc_tcp_scopes else frozenset()

    def check_startup(self) -> None:
        """Refuse to serve HTTP with keys required but none to use."""
        if not (self.settings.http_enabled and self.required):
            return
        self.keys.refresh(force=True)
        if self.keys.active_count() == 0:
            raise SettingsError(
                f"the HTTP door on {self.settings.http_host} requires API keys and there are none: "
                "create one with 'hfd keys create --name NAME', or set auth_required = \"false\" "
                "(only behind a proxy that authenticates)"
            )

    def http(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """The principal of an HTTP request (keys must be fresh: see KeyStore.refresh).
        ``api_key``: the ``x-api-key`` header, how Anthropic's SDK sends its key, read when
        there is no bearer token."""
        token = bearer_token(authorization) or ((api_key or "").strip() or None)
        # Without required keys, OpenAI SDKs still send some placeholder key ("sk-no-key"):
        # only what looks like one of ours is checked, so a revoked hfd key fails everywhere.
        if token is None or (not self.required and not token.startswith(KEY_PREFIX)):
            if self.required:
                raise Unauthorized(
                    "this daemon requires an API key: send 'Authorization: Bearer <key>' "
                    "(create one with 'hfd keys create')"
                )
            return ANONYMOUS
        key = self.keys.lookup(token)
        if key is None:
            raise Unauthorized("invalid or revoked API key")
        return Principal.from_key(key)

    def ipc(self, user_id: str | None) -> Principal:
        """The principal of an IPC message, from the User-Id the ZAP handler gave it."""
        if user_id and user_id.startswith(USER_UID_PREFIX):
            uid = user_id[len(USER_UID_PREFIX) :]
            return Principal(kind="local", name=_user_name(uid), scopes=ALL_SCOPES)
        if user_id and user_id.startswith(USER_CURVE_PREFIX):
            public = user_id[len(USER_CURVE_PREFIX) :]
            return Principal(kind="curve", name=public, scopes=self.tcp_scopes)
        # No ZAP verdict (peer checks off): the socket file's mode was the only gate.
        return Principal(kind="local", name=user_id or "unverified", scopes=ALL_SCOPES)


def _user_name(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return uid
