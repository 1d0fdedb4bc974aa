"""TLS on the HTTP door, and the rule for plain HTTP beyond loopback.

The daemon builds the ``ssl.SSLContext`` itself and hands it to uvicorn, so it can re-read the
certificate on SIGHUP: ``reload()`` loads the files into the same context, and every handshake
after it uses the new certificate (connections already open keep theirs). A new pair is first
loaded into a scratch context, so a half-written or mismatched file leaves the old certificate
serving instead of a broken context.

API keys and prompts must not cross a network in clear text: with ``http_host`` beyond
loopback and no certificate, the daemon refuses to start unless ``http_allow_plaintext`` says
a TLS-terminating proxy sits in front.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from hfd.daemon.access.auth import is_loopback
from hfd.daemon.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load the TLS certificate {cert} with key {key}: {exc}") from exc


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


class TlsConfig:
    """The door's server context and the files it comes from."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = _new_context()
        _load(self.context, cert, key)

    def reload(self) -> bool:
        """Re-read the files; True when the new certificate serves from the next handshake."""
        try:
            _load(_new_context(), self.cert, self.key)  # all or nothing
            _load(self.context, self.cert, self.key)
        except SettingsError as exc:
            log.error("TLS certificate not reloaded; the old one still serves", extra={"error": str(exc)})
            return False
        log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
        return True


def tls_config(settings: Settings) -> TlsConfig | None:
    if settings.http_tls_cert is None or settings.http_tls_key is None:
        return None
    return TlsConfig(settings.http_tls_cert, settings.http_tls_key)


def check_plaintext(settings: Settings) -> None:
    """Refuse plain HTTP beyond loopback unless it is explicitly allowed; warn when it is."""
    if not settings.http_enabled or settings.http_unix_socket is not None:
        return
    if settings.http_tls_cert is not None or is_loopback(settings.http_host):
        return
    if settings.http_allow_plaintext:
        log.warning(
            "serving plain HTTP beyond loopback: API keys and prompts cross the network readable "
            "unless a TLS-terminating proxy is in front",
            extra={"host": settings.http_host},
        )
        return
    log.error(
        "refusing plain HTTP beyond loopback: set [http] tls_cert and tls_key, "
        "or allow_plaintext = true behind a TLS-terminating proxy",
        extra={"host": settings.http_host},
    )
    raise SettingsError(
        f"http_host {settings.http_host} is beyond loopback and the HTTP door has no TLS: "
        "set [http] tls_cert and tls_key, or [http] allow_plaintext = true behind a TLS-terminating proxy"
    )
