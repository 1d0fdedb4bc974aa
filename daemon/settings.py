"""Every setting of the daemon, read in this one module.

Precedence: CLI flag > ``HFD_*`` environment variable > config file (TOML) > default.

Each setting is a field of ``Settings`` with a section and a help text in its metadata. The
same name is used everywhere: the field ``http_port`` is ``port`` under ``[http]`` in the
config file, ``HFD_HTTP_PORT`` in the environment and ``--http-port`` on the command line.
``docs/settings.md`` is generated from these fields (``python -m hfd.daemon.settings``), and
a test fails when it is out of date.

Paths come from platformdirs for a user daemon and from the systemd/FHS directories
(``STATE_DIRECTORY``, ``CACHE_DIRECTORY``, ``RUNTIME_DIRECTORY``, ``CONFIGURATION_DIRECTORY``,
as systemd sets them, or /var/lib/hfd, /var/cache/hfd, /run/hfd, /etc/hfd when
``HFD_SYSTEM=1``) for the system service.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import platformdirs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "HFD_"
DEFAULT_HTTP_PORT = 11535
APP_NAME = "hfd"


class SettingsError(ValueError):
    """A setting has a value of the wrong type or out of range."""


def _setting(default: Any, section: str, help: str, *, factory: Any = None) -> Any:
    meta = {"section": section, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSpec:
    """One model the daemon serves, from ``[[models]]`` in the config file.

    ``ref`` is a local directory, ``org/name[@revision]`` (looked up in the store and the local
    Hugging Face cache) or ``ipfs://<cid>``. Clients use ``name`` (the alias), or ``ref`` when
    no alias is given.
    """

    ref: str
    name: str = ""
    task: str | None = None  # a task of hfd.daemon.tasks.registry; None: detected from the files
    engine: str | None = None  # pin an engine: "torch" | "openvino" | "onnxruntime"
    device: str | None = None  # pin a device: "cpu", "cuda:0", "GPU", "NPU", "mps"
    keep_alive: float | None = None  # seconds; None: the daemon default; <0: forever; 0: unload after use
    preload: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    weight_format: str | None = None  # "fp32" | "fp16" | "int8" | "int4"
    threads: int | None = None
    max_running: int | None = None
    cid: str | None = None  # IPFS CID of the published snapshot, when known
    tool_parser: str | None = None  # how tool calls are read: "hermes", "llama3", "mistral", "json"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def public_name(self) -> str:
        return self.name or self.ref


@dataclass(frozen=True)
class Settings:
    # -- paths
    config_file: Path | None = _setting(
        None, "paths", "Config file (TOML). Default: <config dir>/config.toml when it exists."
    )
    state_dir: Path = _setting(
        None, "paths", "Persistent state: the model store and its catalog, keys, usage log."
    )
    cache_dir: Path = _setting(
        None, "paths", "Derived, re-creatable data: engine exports, the response cache."
    )
    runtime_dir: Path = _setting(None, "paths", "Sockets and the pid file.")
    hf_cache_dir: Path | None = _setting(
        None,
        "paths",
        "An existing Hugging Face hub cache to read models from as is (default: the one huggingface_hub uses, when present).",
    )

    # -- ipc
    ipc_path: Path | None = _setting(None, "ipc", "ZeroMQ IPC socket path. Default: <runtime_dir>/hfd.sock.")
    ipc_mode: int = _setting(
        0o600, "ipc", "File mode of the IPC socket (octal in the config file, e.g. 0o660)."
    )
    ipc_group: str | None = _setting(
        None, "ipc", "Group that owns the IPC socket (the system service uses 'hfd')."
    )
    ipc_max_message_bytes: int = _setting(
        16 * 1024 * 1024,
        "ipc",
        "Largest request message accepted on the IPC socket; a client that sends a larger one is disconnected.",
    )
    ipc_max_header_bytes: int = _setting(
        8 * 1024 * 1024,
        "ipc",
        "Largest msgpack header of an IPC request (prompts and inputs travel in it; binary payloads in raw frames). Larger: dropped unread and logged.",
    )
    ipc_max_header_items: int = _setting(
        256 * 1024,
        "ipc",
        "Most maps, lists and their elements in one IPC request header, counted while decoding (msgpack's empty map is one byte but a ~70-byte object). Beyond: dropped and logged.",
    )
    ipc_stall_timeout: float = _setting(
        30.0,
        "ipc",
        "Seconds a reply may wait for a client that stopped reading its stream; then the request is cancelled.",
    )
    ipc_peer_check: bool = _setting(
        True,
        "ipc",
        "Check every IPC peer's uid/gid (kernel peer credentials) before it may send anything: root, the daemon's own user and ipc_allowed_users/ipc_allowed_groups get in.",
    )
    ipc_allowed_users: tuple[str, ...] = _setting(
        (), "ipc", "Users (names or uids) allowed on the IPC socket besides root and the daemon's own user."
    )
    ipc_allowed_groups: tuple[str, ...] = _setting(
        (),
        "ipc",
        "Groups (names or gids) whose members may use the IPC socket (default: ipc_group, when set).",
    )
    ipc_tcp: str | None = _setting(
        None,
        "ipc",
        "Also serve the IPC protocol on this TCP endpoint for the LAN, e.g. 'tcp://0.0.0.0:5555'. Requires CURVE: ipc_curve_secret_key and ipc_curve_clients_dir.",
    )
    ipc_curve_secret_key: Path | None = _setting(
        None,
        "ipc",
        "The daemon's CURVE secret key file for ipc_tcp (a ZeroMQ certificate; 'hfd keys curve' makes one).",
    )
    ipc_curve_clients_dir: Path | None = _setting(
        None,
        "ipc",
        "Directory of the CURVE public keys ('*.key' certificates) of the clients allowed on ipc_tcp; re-read when it changes.",
    )
    ipc_tcp_scopes: tuple[str, ...] = _setting(
        ("inference",), "ipc", "Scopes CURVE clients on ipc_tcp get: inference, models, admin."
    )

    # -- http
    http_enabled: bool = _setting(True, "http", "Serve the OpenAI-compatible HTTP API.")
    http_host: str = _setting(
        "127.0.0.1", "http", "HTTP bind address. Binding beyond loopback requires API keys."
    )
    http_port: int = _setting(
        DEFAULT_HTTP_PORT, "http", "HTTP port (0: pick a free port, printed when ready)."
    )
    http_unix_socket: Path | None = _setting(
        None, "http", "Serve HTTP on this unix socket instead of host:port."
    )
    http_max_body_bytes: int = _setting(
        16 * 1024 * 1024, "http", "Largest request body accepted (413 beyond)."
    )
    http_cors_origins: tuple[str, ...] = _setting(
        (), "http", "Origins allowed by CORS (empty: no CORS headers)."
    )
    http_web: bool = _setting(
        True,
        "http",
        "Serve the web page at / (static files under /web/; off: 404). It calls the API with the key the user types, so keys apply as to any client.",
    )
    http_header_timeout: float = _setting(
        10.0,
        "http",
        "Seconds a connection may take to send a request's headers (408 and close beyond).",
    )
    http_body_timeout: float = _setting(
        30.0,
        "http",
        "Seconds a request body may pause between two reads (408 and close beyond).",
    )
    http_keep_alive_timeout: float = _setting(
        100.0,
        "http",
        "Seconds an idle keep-alive connection stays open. Longer than common clients' pool idle time (httpx 5 s, Go 90 s), so a client never reuses a connection the daemon is just closing.",
    )
    http_max_connections: int = _setting(
        1024,
        "http",
        "Most open HTTP connections. At the cap, idle and header-waiting connections are closed first; beyond, new connections get 503. Lowered to fit the open-file limit.",
    )
    http_tls_cert: Path | None = _setting(
        None,
        "http",
        "TLS certificate chain (PEM) for the HTTP door; with http_tls_key, the door serves HTTPS. Re-read on SIGHUP.",
    )
    http_tls_key: Path | None = _setting(
        None, "http", "TLS private key (PEM) for http_tls_cert. Re-read on SIGHUP."
    )
    http_allow_plaintext: bool = _setting(
        False,
        "http",
        "Serve plain HTTP beyond loopback (for a TLS-terminating proxy in front). Otherwise a non-loopback http_host needs http_tls_cert.",
    )

    # -- auth
    auth_required: str = _setting(
        "auto",
        "auth",
        "API keys on the HTTP door: auto (required when http_host is not loopback), true or false. A daemon that requires keys and has none refuses to start.",
    )

    # -- metrics
    metrics_enabled: bool = _setting(True, "metrics", "Serve Prometheus metrics at GET /metrics.")
    metrics_public: bool = _setting(
        False,
        "metrics",
        "Serve /metrics without a key even where keys are required (otherwise it needs the admin scope).",
    )

    # -- usage
    usage_enabled: bool = _setting(
        True,
        "usage",
        "Keep the usage log (<state_dir>/usage.duckdb): one row per request; 'hfd stats' reads it.",
    )
    usage_flush_records: int = _setting(
        512, "usage", "Write queued usage records once this many are waiting."
    )
    usage_flush_seconds: float = _setting(
        5.0, "usage", "Write queued usage records at least this often (seconds), and on shutdown."
    )
    usage_queue_max: int = _setting(
        65536,
        "usage",
        "Most usage records waiting to be written; beyond, records are dropped (counted in hfd_usage_records_dropped_total) instead of slowing requests.",
    )
    usage_retention_days: float = _setting(90.0, "usage", "Days usage records are kept (0: forever).")

    # -- lifecycle
    grace_period: float = _setting(
        10.0, "daemon", "Seconds in-flight requests get to finish on SIGTERM/SIGINT."
    )
    log_level: str = _setting("info", "daemon", "debug | info | warning | error.")
    log_format: str = _setting("auto", "daemon", "json | text | auto (json when not on a terminal).")

    # -- models
    models: tuple[ModelSpec, ...] = _setting(
        None, "models", "Models to serve: [[models]] tables, or HFD_MODELS='alias=ref,ref2'.", factory=tuple
    )
    default_keep_alive: float = _setting(
        300.0, "models", "Seconds an idle model stays loaded (<0: forever, 0: unload after each request)."
    )
    allow_pull: bool = _setting(False, "models", "A request for a model not in the store may pull it.")
    export_on_pull: bool = _setting(
        True,
        "models",
        "hfd pull also builds the engine export (OpenVINO IR, ONNX graph) the first load here would need.",
    )
    measure_engines: bool = _setting(
        True,
        "models",
        "Measure a model's candidate engines on this machine (at hfd pull after its export, so only with export_on_pull; at preload; and with hfd tune) and load it on the fastest; the ranking is kept in the state dir. Off: the static order.",
    )
    engine: str | None = _setting(
        None, "models", "Pin every model to this engine (torch | openvino | onnxruntime)."
    )
    device: str | None = _setting(None, "models", "Pin every model to this device.")
    threads: int = _setting(
        0, "models", "Threads per model engine (0: physical cores minus one for the event loop, at least 1)."
    )

    # -- batching
    max_running: int = _setting(64, "batching", "Generation: most sequences decoded together in one step.")
    max_batched_tokens: int = _setting(
        4096, "batching", "Generation: most prompt tokens prefilled in one step."
    )
    stream_interval_ms: float = _setting(
        20.0,
        "batching",
        "Generation streams: the shortest time between two chunks of one stream; tokens made meanwhile go out together (a stream's first token and its end go at once). 0: a chunk per engine step.",
    )
    max_queue: int = _setting(
        256, "batching", "Most requests waiting per model before new ones get 'overloaded' (HTTP 429)."
    )
    encoder_max_batch: int = _setting(32, "batching", "Embeddings: most inputs in one batch.")
    encoder_batch_tokens: int = _setting(8192, "batching", "Embeddings: most (padded) tokens in one batch.")
    encoder_batch_wait_ms: float = _setting(
        2.0, "batching", "Embeddings: longest wait for more inputs before a partial batch runs."
    )
    max_inputs_per_request: int = _setting(
        2048, "batching", "Embeddings: most inputs in one request (400 beyond)."
    )
    max_input_bytes: int = _setting(
        4 * 1024 * 1024,
        "batching",
        "Embeddings: most UTF-8 bytes of all inputs of one request together, checked before tokenising (400 beyond).",
    )
    audio_max_bytes: int = _setting(
        25 * 1000 * 1000,
        "batching",
        "Speech recognition: largest audio upload, as OpenAI's 25 MB (400 beyond; the HTTP body limit applies too).",
    )
    audio_max_seconds: float = _setting(
        1800.0,
        "batching",
        "Speech recognition: longest audio per request, checked while decoding (400 beyond).",
    )
    # 2, as measured: on the 2-core AMD box (tiny Whisper, torch) calls of 2 beat one at a time by
    # ~15% and calls of 4 lost to it (0.54-0.72x; docs/benchmarks.md). Raise it where a larger
    # model's decoder, which a batch shares, dominates.
    audio_max_batch: int = _setting(
        2,
        "batching",
        "Speech recognition: most requests transcribed in one engine call (torch: their 30 s windows in one "
        "batched generate; OpenVINO takes one); 1: one at a time.",
    )
    image_max_bytes: int = _setting(
        10 * 1024 * 1024, "batching", "Image embeddings and vision chat: largest encoded image (400 beyond)."
    )
    image_max_pixels: int = _setting(
        16 * 1024 * 1024,
        "batching",
        "Image embeddings and vision chat: most pixels (width x height) of one image, checked before decoding "
        "(400 beyond).",
    )
    image_fetch_urls: bool = _setting(
        False,
        "batching",
        "Image embeddings and vision chat: fetch http(s) image URLs (off: data: URLs and base64 only).",
    )
    image_max_per_request: int = _setting(
        8, "batching", "Vision chat: most images (image_url parts) in one chat request (400 beyond)."
    )
    prompt_bytes_per_token: int = _setting(
        16,
        "batching",
        "Generation: a prompt of more UTF-8 bytes than the model's context length times this is refused "
        "(context_length_exceeded, 400) before it is tokenised. See docs/operations.md.",
    )

    # -- memory
    memory_budget_bytes: int = _setting(
        0, "memory", "RAM the loaded models may use (0: 75% of what detection found)."
    )
    gpu_memory_budget_bytes: int = _setting(
        0, "memory", "GPU memory the loaded models may use (0: 90% of the device)."
    )
    memory_wait_timeout: float = _setting(
        30.0,
        "memory",
        "Seconds a load waits for busy models to become idle so one can be unloaded to make room; then 'model_unavailable' (503, Retry-After).",
    )
    memory_context_tokens: int = _setting(
        0,
        "memory",
        "Tokens per sequence assumed when estimating a generation model's KV cache (0: the model's full context). See docs/models.md.",
    )

    # -- response cache
    cache_enabled: bool = _setting(
        True,
        "cache",
        "Serve repeated deterministic requests (embeddings; generation at temperature 0 or with a seed) from the response cache.",
    )
    cache_max_bytes: int = _setting(
        64 * 1024 * 1024,
        "cache",
        "Most bytes the response cache holds; least recently used entries go first.",
    )
    cache_ttl: float = _setting(3600.0, "cache", "Seconds a cached response stays valid (<=0: no expiry).")
    cache_persist: bool = _setting(
        False, "cache", "Keep cached responses in <cache_dir>/responses across restarts."
    )
    # -- stored responses (POST /v1/responses with store, previous_response_id)
    responses_max_age: float = _setting(
        86400.0,
        "responses",
        "Seconds a stored response (/v1/responses with store: true) is kept for previous_response_id and GET (<=0: until max_count pushes it out).",
    )
    responses_max_count: int = _setting(
        1000, "responses", "Most stored responses kept in <state_dir>/responses; the oldest go first."
    )
    prefix_caching: bool = _setting(
        True,
        "cache",
        "Reuse the KV cache of shared prompt prefixes, such as a chat's earlier turns "
        "(OpenVINO GenAI; torch for attention-only models).",
    )

    # -- circuit breaker
    breaker_failures: int = _setting(
        3,
        "breaker",
        "Consecutive load or inference failures of a model (per engine) that open its circuit breaker.",
    )
    breaker_cooldown: float = _setting(
        30.0,
        "breaker",
        "Seconds an open breaker answers 'model_unavailable' (503) at once before one probe request is let through.",
    )

    # -- store
    store_use_hf_cache: bool = _setting(
        True,
        "store",
        "Also read models from an existing Hugging Face cache (hf_cache_dir), as is, without copying.",
    )
    store_lock_timeout: float = _setting(
        600.0, "store", "Seconds a pull waits for another process pulling the same model before giving up."
    )
    store_scrub_interval: float = _setting(
        0.0,
        "store",
        "Seconds between background re-hashes of one stored blob (the least recently verified); 0 turns the scrub off.",
    )
    store_scrub_rate: float = _setting(
        20.0, "store", "MB/s the background scrub reads at most (0: no bound)."
    )

    # -- ipfs
    ipfs_enabled: bool = _setting(
        True, "ipfs", "Fetch models through the IPFS node when a CID is known for them."
    )
    ipfs_api: str = _setting(
        "/ip4/127.0.0.1/tcp/5001",
        "ipfs",
        "The IPFS node's RPC API (Kubo-compatible): a multiaddr or an http(s) URL.",
    )
    ipfs_auth: str | None = _setting(
        None,
        "ipfs",
        "Authorization header value for the RPC API, e.g. 'Basic dXNlcjpwYXNz' or 'Bearer <token>'.",
    )
    ipfs_timeout: float = _setting(60.0, "ipfs", "Seconds an RPC call may wait for data before it fails.")
    ipfs_connect_timeout: float = _setting(
        2.0,
        "ipfs",
        "Seconds to connect to the RPC API; an unreachable node falls back to the Hub after this.",
    )
    ipfs_share: bool = _setting(
        False,
        "ipfs",
        "Add models pulled from the Hub to the IPFS node and pin them, so other boxes can fetch them.",
    )
    ipfs_index: Path | None = _setting(
        None,
        "ipfs",
        "A text file of 'org/name[@revision] <cid>' lines: CIDs to try before the Hub. 'hfd publish' adds to it.",
    )

    # -- hub
    hub_endpoint: str | None = _setting(
        None, "hub", "Hugging Face Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co)."
    )
    hub_offline: bool = _setting(False, "hub", "Never contact the Hub (also on when HF_HUB_OFFLINE=1).")
    hub_timeout: float = _setting(30.0, "hub", "Seconds a Hub request may wait for data before it fails.")

    def ipc_socket(self) -> Path:
        return self.ipc_path or (self.runtime_dir / "hfd.sock")

    def ipc_endpoint(self) -> str:
        return f"ipc://{self.ipc_socket()}"

    def model(self, name: str) -> ModelSpec | None:
        for spec in self.models:
            if name in (spec.public_name, spec.ref):
                return spec
        return None


# ----------------------------------------------------------------------------- loading


def _default_paths(environ: Mapping[str, str]) -> dict[str, Path]:
    """systemd's directories when set (the system service), else platformdirs (a user daemon)."""

    def sd(var: str) -> Path | None:
        value = environ.get(var)
        return Path(value.split(":")[0]) if value else None

    system = environ.get("HFD_SYSTEM", "") in ("1", "true", "yes")
    if system:
        return {
            "state_dir": sd("STATE_DIRECTORY") or Path("/var/lib/hfd"),
            "cache_dir": sd("CACHE_DIRECTORY") or Path("/var/cache/hfd"),
            "runtime_dir": sd("RUNTIME_DIRECTORY") or Path("/run/hfd"),
            "config_dir": sd("CONFIGURATION_DIRECTORY") or Path("/etc/hfd"),
        }
    runtime = sd("RUNTIME_DIRECTORY")
    if runtime is None:
        try:
            with warnings.catch_warnings():
                # No XDG_RUNTIME_DIR (containers, su): platformdirs falls back to /tmp/runtime-UID.
                warnings.simplefilter("ignore")
                runtime = Path(platformdirs.user_runtime_dir(APP_NAME, appauthor=False))
        except Exception:  # no XDG_RUNTIME_DIR and no fallback on this platform
            runtime = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "run"
    return {
        "state_dir": sd("STATE_DIRECTORY") or Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
        "cache_dir": sd("CACHE_DIRECTORY") or Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
        "runtime_dir": runtime,
        "config_dir": sd("CONFIGURATION_DIRECTORY")
        or Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
    }


def _field_types() -> dict[str, Any]:
    return get_type_hints(Settings)


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Turn a TOML/env/CLI value into the field's type, or raise SettingsError naming the field."""
    text = str(typ)
    try:
        if value is None:
            return None
        if "ModelSpec" in text:
            return parse_models(value)
        if typ is bool or text in ("bool", "bool | None"):
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if "tuple[str" in text:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if "Path" in text:
            if isinstance(value, str) and value == "":
                return None
            return Path(os.path.expanduser(str(value)))
        if typ is int or text.startswith("int"):
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            if isinstance(value, str):
                return int(value, 0)  # accepts 0o660 / 0x...
            return int(value)
        if typ is float or text.startswith("float"):
            number = float(value)
            if not math.isfinite(number):  # TOML and float() read nan and inf
                raise ValueError(f"not a finite number: {value!r}")
            return number
        if typ is str or text.startswith("str"):
            if isinstance(value, (dict, list)):
                raise ValueError("expected a string")
            return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name!r}: {exc}") from exc
    return value


def parse_models(value: Any) -> tuple[ModelSpec, ...]:
    """Models from TOML ([[models]] tables) or the env/CLI form ``alias=ref,ref2``."""
    specs: list[ModelSpec] = []
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, (ModelSpec, dict)):
        value = [value]
    known = {f.name for f in fields(ModelSpec)}
    for item in value:
        if isinstance(item, ModelSpec):
            specs.append(item)
        elif isinstance(item, str):
            alias, sep, ref = item.partition("=")
            specs.append(ModelSpec(ref=ref if sep else alias, name=alias if sep else ""))
        elif isinstance(item, dict):
            unknown = set(item) - known - {"path", "alias"}
            if unknown:
                raise SettingsError(f"[[models]] has unknown keys: {', '.join(sorted(unknown))}")
            data = dict(item)
            if "path" in data:
                data.setdefault("ref", str(data.pop("path")))
            if "alias" in data:
                data.setdefault("name", data.pop("alias"))
            if "ref" not in data:
                raise SettingsError("[[models]] entry needs 'ref' (a path, org/name[@rev] or ipfs://cid)")
            specs.append(ModelSpec(**data))
        else:
            raise SettingsError(f"cannot read a model from {item!r}")
    names = [s.public_name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SettingsError(f"model names must be unique; repeated: {', '.join(sorted(dupes))}")
    return tuple(specs)


def _flatten_toml(data: Mapping[str, Any]) -> dict[str, Any]:
    """``[http] port = 1`` -> ``{"http_port": 1}``; ``[paths] state_dir`` -> ``state_dir``."""
    names = {f.name: f for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "models":
            out["models"] = value
        elif isinstance(value, dict):
            for sub, subval in value.items():
                if f"{key}_{sub}" in names:
                    out[f"{key}_{sub}"] = subval
                elif sub in names and names[sub].metadata.get("section") == key:
                    out[sub] = subval
                else:
                    raise SettingsError(f"unknown setting [{key}] {sub}")
        elif key in names:
            out[key] = value
        else:
            raise SettingsError(f"unknown setting {key!r}")
    return out


def load_settings(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build the settings once. ``cli`` holds only the flags the user gave (None = not given)."""
    environ = os.environ if environ is None else environ
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    types = _field_types()
    names = [f.name for f in fields(Settings)]

    env_values: dict[str, Any] = {}
    for name in names:
        var = ENV_PREFIX + name.upper()
        if var in environ:
            env_values[name] = environ[var]

    defaults = _default_paths(environ)
    path = cli.get("config_file") or env_values.get("config_file") or config_file
    if path is None:
        candidate = defaults["config_dir"] / "config.toml"
        path = candidate if candidate.is_file() else None
    file_values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                file_values = _flatten_toml(tomllib.load(fh))
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from exc

    merged: dict[str, Any] = {}
    for source in (file_values, env_values, cli):
        for key, value in source.items():
            merged[key] = _coerce(key, value, types[key])
    merged["config_file"] = path
    for key in ("state_dir", "cache_dir", "runtime_dir"):
        if merged.get(key) is None:
            merged[key] = defaults[key]
    settings = Settings(**merged)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    for spec in s.models:
        if spec.keep_alive is not None and not math.isfinite(spec.keep_alive):
            raise SettingsError(f"model {spec.public_name!r}: keep_alive must be a finite number of seconds")
    if s.auth_required.strip().lower() not in ("auto", "true", "false", "yes", "no", "1", "0", "on", "off"):
        raise SettingsError("auth_required must be auto, true or false")
    if s.ipc_tcp and not (s.ipc_curve_secret_key and s.ipc_curve_clients_dir):
        raise SettingsError(
            "ipc_tcp needs CURVE: set ipc_curve_secret_key and ipc_curve_clients_dir ('hfd keys curve' makes keys)"
        )
    if s.ipc_tcp and not s.ipc_tcp.startswith("tcp://"):
        raise SettingsError("ipc_tcp must be a tcp:// endpoint, e.g. tcp://0.0.0.0:5555")
    for name in ("ipc_max_header_bytes", "ipc_max_header_items"):
        if getattr(s, name) < 1:
            raise SettingsError(f"{name} must be at least 1")
    for name in ("usage_flush_records", "usage_queue_max"):
        if getattr(s, name) < 1:
            raise SettingsError(f"{name} must be at least 1")
    if s.usage_flush_seconds <= 0:
        raise SettingsError("usage_flush_seconds must be positive")
    if not (0 <= s.http_port <= 65535):
        raise SettingsError(f"http_port {s.http_port} is not a port number")
    for name in ("http_header_timeout", "http_body_timeout", "http_keep_alive_timeout"):
        if not (0 < getattr(s, name) < float("inf")):
            raise SettingsError(f"{name} must be a positive number of seconds")
    if s.http_max_connections < 1:
        raise SettingsError("http_max_connections must be at least 1")
    if (s.http_tls_cert is None) != (s.http_tls_key is None):
        raise SettingsError("http_tls_cert and http_tls_key go together: set both or neither")
    for name in (
        "max_running",
        "max_batched_tokens",
        "max_queue",
        "encoder_max_batch",
        "encoder_batch_tokens",
        "max_input_bytes",
        "audio_max_bytes",
        "audio_max_batch",
        "image_max_bytes",
        "image_max_pixels",
        "image_max_per_request",
        "prompt_bytes_per_token",
        "responses_max_count",
    ):
        if getattr(s, name) < 1:
            raise SettingsError(f"{name} must be at least 1")
    if not (0 <= s.stream_interval_ms <= 1000):  # NaN compares false too
        raise SettingsError("stream_interval_ms must be a number of milliseconds from 0 to 1000")
    if not (0 < s.audio_max_seconds < float("inf")):
        raise SettingsError("audio_max_seconds must be a positive number of seconds")
    if s.log_format not in ("json", "text", "auto"):
        raise SettingsError("log_format must be json, text or auto")
    if s.grace_period < 0:
        raise SettingsError("grace_period must not be negative")
    for name in ("ipfs_timeout", "ipfs_connect_timeout", "hub_timeout", "store_lock_timeout"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"{name} must be positive")
    for name in ("store_scrub_interval", "store_scrub_rate"):
        if not (0 <= getattr(s, name) < float("inf")):  # NaN compares false too
            raise SettingsError(f"{name} must be a finite number, 0 or more")


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)


# ----------------------------------------------------------------------------- docs


def settings_markdown() -> str:
    """The settings reference (docs/settings.md), generated from the fields above."""
    lines = [
        "# Settings",
        "",
        "Every setting of the daemon. Precedence: CLI flag > `HFD_*` environment variable > config",
        "file (TOML) > default. This page is generated by `python -m hfd.daemon.settings`; a test",
        "fails when it is out of date.",
        "",
        "| config file | environment | CLI flag | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in fields(Settings):
        section = f.metadata["section"]
        prefix = f"{section}_"
        key = f.name[len(prefix) :] if f.name.startswith(prefix) else f.name
        toml = "[[models]]" if f.name == "models" else f"[{section}] {key}"
        if f.default is not dataclasses.MISSING and f.default is not None:
            default = oct(f.default) if f.name.endswith("_mode") else repr(f.default)
        elif f.name in ("state_dir", "cache_dir", "runtime_dir"):
            default = "platformdirs / systemd"
        else:
            default = "—"
        flag = f"--{f.name.replace('_', '-')}"
        lines.append(
            f"| `{toml}` | `{ENV_PREFIX}{f.name.upper()}` | `{flag}` | `{default}` | {f.metadata['help']} |"
        )
    lines += [
        "",
        "## `[[models]]`",
        "",
        "| key | meaning |",
        "| --- | --- |",
    ]
    model_help = {
        "ref": "A local directory, `org/name[@revision]` or `ipfs://<cid>` (`path` is accepted too).",
        "name": "The name clients use (`alias` is accepted too). Default: `ref`.",
        "task": "`generate`, `embed`, `rerank`, `classify` or `token-classify` (the task registry). Default: detected from the model's files (docs/models.md).",
        "engine": "Pin an engine: `torch`, `openvino` or `onnxruntime`.",
        "device": "Pin a device: `cpu`, `cuda:0`, `GPU`, `NPU`, `mps`.",
        "keep_alive": "Seconds this model stays loaded when idle (<0 forever, 0 unload after use).",
        "preload": "Load at start-up instead of on first use.",
        "allow_pickle": "Allow pickled weights (`*.bin`, `*.pt`, `*.pkl`) for this model.",
        "trust_remote_code": "Allow the model's own Python code to run.",
        "weight_format": "OpenVINO weight format: `fp32`, `fp16`, `int8` or `int4` (generation only).",
        "threads": "Engine threads for this model.",
        "max_running": "Generation: most sequences in one step, for this model.",
        "cid": "IPFS CID of the published snapshot.",
        "tool_parser": "How this model's tool calls are read: `hermes`, `llama3`, `mistral` or `json`. Default: from its chat template (docs/http-api.md, Tools).",
        "options": "Engine-specific options (a table).",
    }
    for f in fields(ModelSpec):
        lines.append(f"| `{f.name}` | {model_help.get(f.name, '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
