"""Fetching an http(s) image URL, for image embeddings and vision chat, when the
``image_fetch_urls`` setting allows it (off by default: a daemon that fetches what requests
name can be made to reach hosts only it can see; turn it on only where callers are trusted).

One GET, no redirects followed (a redirect could lead anywhere the setting's owner did not
think of), ``FETCH_TIMEOUT_S`` for the whole transfer, the body read up to ``image_max_bytes``
and refused beyond (the declared length is checked first). Every failure is a 400 on the part's
``param``, saying what went wrong without echoing the server's body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.settings import Settings

FETCH_TIMEOUT_S = 10.0


def fetch(url: str, settings: Settings, param: str) -> bytes:
    """The bytes at ``url`` (blocking: call it off the event loop)."""
    import httpx

    limit = settings.image_max_bytes
    too_big = InvalidRequest(f"the image at the URL is over the limit of {limit} bytes", param=param,
                             details={"max_bytes": limit})  # fmt: skip
    try:
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S, follow_redirects=False) as reply:
            if reply.status_code != 200:
                raise InvalidRequest(f"fetching the image URL answered HTTP {reply.status_code}", param=param)
            declared = reply.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_big
            body = bytearray()
            for chunk in reply.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise too_big
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"the image URL cannot be fetched ({type(exc).__name__})", param=param) from None
    return bytes(body)
