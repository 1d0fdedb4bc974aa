"""The async Kubo RPC client against a real node on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from support.ipfs_node import IpfsNode
from support.store_env import closed_port

from hfd.client.errors import FetchError
from hfd.ipfs.client import AddEntry, ImportOptions, KuboClient

pytestmark = pytest.mark.ipfs


def test_add_directory_cat_ls_and_pin(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(700_000))

    async def main() -> None:
        async with KuboClient(ipfs_node.api, timeout=30) as client:
            assert "Version" in await client.version()
            cids = await client.add(
                "model",
                [AddEntry("sub dir/big.bin", big), AddEntry("a.json", data=b'{"a": 1}')],
                options=ImportOptions(),
            )
            root = cids[""]
            assert root.startswith("bafy") and cids["a.json"].startswith("bafk")  # CIDv1, base32, raw leaves
            assert await client.cat_bytes(f"/ipfs/{root}/a.json", max_bytes=100) == b'{"a": 1}'
            got = bytearray()
            async with client.cat(f"/ipfs/{root}/sub dir/big.bin", offset=100_000, length=250_000) as chunks:
                async for chunk in chunks:
                    got += chunk
            assert bytes(got) == big.read_bytes()[100_000:350_000]
            links = {link.name: link for link in await client.ls(root)}
            assert set(links) == {"a.json", "sub dir"} and links["sub dir"].is_dir
            assert links["a.json"].cid == cids["a.json"]
            await client.pin_add(root)
            assert await client.pins(root)
            # The same bytes under the same import settings give the same CID.
            again = await client.add(
                "other-name",
                [AddEntry("sub dir/big.bin", big), AddEntry("a.json", data=b'{"a": 1}')],
                options=ImportOptions(),
            )
            assert again[""] == root
            different = await client.add(
                "model",
                [AddEntry("a.json", data=b'{"a": 1}')],
                options=ImportOptions(cid_version=0, raw_leaves=False),
            )
            assert different["a.json"] != cids["a.json"]
            with pytest.raises(FetchError):
                await client.cat_bytes(f"/ipfs/{root}/a.json", max_bytes=3)

    anyio.run(main)


def test_node_errors_become_fetch_errors(ipfs_node: IpfsNode) -> None:
    async def main() -> None:
        async with KuboClient(ipfs_node.api, timeout=30) as client:
            with pytest.raises(FetchError) as err:
                await client.cat_bytes("not-a-cid", max_bytes=10)
            assert err.value.details["reason"] == "error" and err.value.details["status"] in (400, 500)
            root = (await client.add("model", [AddEntry("x", data=b"x")], options=ImportOptions()))[""]
            with pytest.raises(FetchError) as err:
                await client.cat_bytes(f"/ipfs/{root}/missing", max_bytes=10)
            assert "IPFS cat failed" in err.value.message

    anyio.run(main)


def test_unreachable_node_fails_fast_with_reason(ipfs_node: IpfsNode) -> None:
    async def main() -> None:
        async with KuboClient(f"http://127.0.0.1:{closed_port()}", connect_timeout=1.0) as client:
            with pytest.raises(FetchError) as err:
                await client.version()
            assert err.value.details["reason"] == "unreachable"

    anyio.run(main)


def test_authorization_header_is_sent() -> None:
    """Kubo's RPC can require ``Authorization`` (API.Authorizations); a loopback server that checks
    it the same way (401 without it) stands in, since js-ipfs has no such option."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            body = json.dumps(
                {"Version": "0.0.1"} if ok else {"Message": "unauthorized", "Code": 0, "Type": "error"}
            ).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    async def main() -> None:
        async with KuboClient(url, auth="Bearer s3cret") as client:
            assert (await client.version())["Version"] == "0.0.1"
        async with KuboClient(url, auth="Bearer wrong") as client:
            with pytest.raises(FetchError) as err:
                await client.version()
            assert err.value.details["status"] == 401 and "unauthorized" in err.value.message

    try:
        anyio.run(main)
    finally:
        server.shutdown()
        server.server_close()
