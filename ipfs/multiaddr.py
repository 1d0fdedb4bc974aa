"""The RPC API address, given as a URL or as a multiaddr (how Kubo writes it in its config)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from hfd.client.errors import ValidationFailed


@dataclass(frozen=True)
class ApiAddress:
    base_url: str  # e.g. http://127.0.0.1:5001
    uds: str | None = None  # a unix socket path, when the API listens on one


def parse_api_address(text: str) -> ApiAddress:
    """``/ip4/127.0.0.1/tcp/5001``, ``/dns4/host/tcp/443/https``, ``/unix/run/ipfs.sock`` or a URL."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ValidationFailed(f"IPFS API URL {text!r} has no host")
        return ApiAddress(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}")
    if not text.startswith("/"):
        raise ValidationFailed(f"IPFS API address {text!r} is neither a URL nor a multiaddr")
    parts_list = text.strip("/").split("/")
    if parts_list[0] == "unix":
        return ApiAddress("http://localhost", uds="/" + "/".join(parts_list[1:]))
    host: str | None = None
    port: int | None = None
    scheme = "http"
    i = 0
    try:
        while i < len(parts_list):
            proto = parts_list[i]
            if proto in ("ip4", "dns", "dns4", "dns6"):
                host = parts_list[i + 1]
                i += 2
            elif proto == "ip6":
                host = f"[{parts_list[i + 1]}]"
                i += 2
            elif proto == "tcp":
                port = int(parts_list[i + 1])
                i += 2
            elif proto in ("https", "tls"):
                scheme = "https"
                i += 1
            elif proto == "http":
                i += 1
            else:
                raise ValidationFailed(f"IPFS API multiaddr {text!r}: unsupported protocol {proto!r}")
    except (IndexError, ValueError) as exc:
        raise ValidationFailed(f"IPFS API multiaddr {text!r} is malformed") from exc
    if host is None or port is None:
        raise ValidationFailed(f"IPFS API multiaddr {text!r} needs a host and a tcp port")
    return ApiAddress(f"{scheme}://{host}:{port}")
