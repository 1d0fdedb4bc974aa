"""A GGUF tag pulled from a real IPFS node: a snapshot with two GGUF files published once, a
second store pulling ``org/name:Q8_0`` by the CID index takes that file and the files without
weights only, records it under ``main:Q8_0``, and a tag with no file falls through to the next
source, the error naming the tags the manifest has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.ipfs_node import IpfsNode
from support.store_env import store_settings

from hfd.client.errors import ModelNotFound
from hfd.daemon.store.model_store import ModelStore

pytestmark = pytest.mark.ipfs
REPO = "acme/tiny-gguf"
F16, Q8 = "m-F16.gguf", "m-Q8_0.gguf"


def test_a_tagged_pull_from_ipfs_takes_only_that_file(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (source / "tokenizer.json").write_text("{}")
    (source / F16).write_bytes(b"GGUF" + b"\x01" * 5000)
    (source / Q8).write_bytes(b"GGUF" + b"\x02" * 3000)
    index = tmp_path / "cids.txt"
    publisher = ModelStore(store_settings(tmp_path / "a", ipfs_api=ipfs_node.api, ipfs_index=index))
    publisher.publish(str(source), repo=REPO)

    store = ModelStore(store_settings(tmp_path / "b", ipfs_api=ipfs_node.api, ipfs_index=index))
    snap = store.pull(f"{REPO}:q8_0")  # the Hub is offline: IPFS or nothing
    assert snap.source == "ipfs"
    assert {p.name for p in snap.path.iterdir()} == {"config.json", "tokenizer.json", Q8}
    assert (snap.path / Q8).read_bytes() == (source / Q8).read_bytes()
    assert store.layout.repo(REPO).refs_map() == {"main:Q8_0": snap.commit}
    assert store.find(REPO) is None

    with pytest.raises(ModelNotFound) as err:
        store.pull(f"{REPO}:Q4_K_M")
    assert f"F16 ({F16})" in err.value.message and f"Q8_0 ({Q8})" in err.value.message
