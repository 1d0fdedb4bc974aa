"""Image URLs, fetched only when ``image_fetch_urls`` is on: from a real HTTP server on
loopback, bounded by ``image_max_bytes`` (declared or streamed), no redirects followed, and
every failure a 400 on the part's ``param``."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator

import pytest

from hfd.client.errors import InvalidRequest
from hfd.daemon import images
from hfd.daemon.settings import Settings, with_overrides


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/a.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
        elif self.path == "/chunked.png":  # no declared length: the limit applies while reading
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(4):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(PNG), PNG))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/a.png")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ON = with_overrides(Settings(), image_fetch_urls=True)


def test_off_by_default(server: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        images.decode_image(server + "/a.png", Settings(), "p")
    assert err.value.param == "p" and "not fetched" in str(err.value)


def test_fetched_when_on(server: str) -> None:
    assert images.decode_image(server + "/a.png", ON, "p").size == (20, 10)


@pytest.mark.parametrize(
    ("path", "limit", "says"),
    [
        ("/a.png", 10, "over the limit"),  # declared length
        ("/chunked.png", len(PNG) * 2, "over the limit"),  # counted while reading
        ("/missing.png", 10**6, "HTTP 404"),
        ("/moved", 10**6, "HTTP 302"),  # redirects are not followed
    ],
)
def test_refusals_are_400s(server: str, path: str, limit: int, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        images.decode_image(server + path, with_overrides(ON, image_max_bytes=limit), "messages.0.content.0")
    assert err.value.param == "messages.0.content.0" and says in str(err.value)


def test_unreachable_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as err:
        images.decode_image("http://127.0.0.1:9/a.png", ON, "p")  # the discard port: nothing listens
    assert "cannot be fetched" in str(err.value)
