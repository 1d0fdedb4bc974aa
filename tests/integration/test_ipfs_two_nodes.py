"""Two IPFS nodes on loopback: a box fetches a model that only the other box's node has.

js-ipfs 0.66 needs ``@libp2p/peer-record`` pinned to 5.0.2 (see tests/support/jsipfs/package.json):
later 5.0.x releases bring a second major version of ``@multiformats/multiaddr`` whose objects
the peer store rejects, so identify fails, bitswap never learns the peer and no block moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ipfs_node import IpfsNode, IpfsUnavailable, start_node
from support.models import tiny_bert
from support.store_env import store_settings

from hfd.daemon.store.model_store import ModelStore

pytestmark = pytest.mark.ipfs


@pytest.fixture(scope="module")
def second_node(ipfs_node: IpfsNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    try:
        node = start_node(tmp_path_factory.mktemp("ipfs-b") / "node-b")
    except IpfsUnavailable as exc:
        pytest.skip(f"no second IPFS node: {exc}")
    try:
        yield node
    finally:
        node.stop()


def test_box_b_fetches_a_model_only_box_a_has(
    ipfs_node: IpfsNode, second_node: IpfsNode, tmp_path: Path
) -> None:
    from transformers import AutoModel

    box_a = ModelStore(store_settings(tmp_path / "a", ipfs_api=ipfs_node.api))
    cid = box_a.publish(str(tiny_bert()), repo="acme/tiny-bert").cid

    assert ipfs_node.swarm, "node A printed no loopback swarm address"
    second_node.rpc("swarm/connect", ipfs_node.swarm[0])
    peers = second_node.rpc("swarm/peers")
    assert isinstance(peers, dict) and ipfs_node.peer_id in {p["Peer"] for p in peers.get("Peers") or []}

    box_b = ModelStore(store_settings(tmp_path / "b", ipfs_api=second_node.api, ipfs_timeout=60.0))
    snap = box_b.pull(f"ipfs://{cid}")
    assert snap.source == "ipfs" and snap.repo == "acme/tiny-bert"
    assert (snap.path / "model.safetensors").read_bytes() == (tiny_bert() / "model.safetensors").read_bytes()
    AutoModel.from_pretrained(snap.path, local_files_only=True)
