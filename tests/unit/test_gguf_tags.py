"""GGUF quantization tags (``org/name:Q4_K_M``): the name rule both doors and the store share,
and tagged pulls from a local Hub-compatible server holding a repository with two GGUF files:
only the tag's file comes (with the files that hold no weights), a second tag joins the same
snapshot, a tag with no file is a 404 listing the tags there are, and an untagged reference
never takes a tagged pull's snapshot for the whole repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hub_server import HubRepo, HubServer
from support.store_env import store_settings

from hfd.client.errors import InvalidRequest, ModelNotFound
from hfd.daemon.models.refs import is_store_ref
from hfd.daemon.ollama.names import to_ollama, to_ref
from hfd.daemon.store import gguf_tags
from hfd.daemon.store.model_store import ModelStore
from hfd.daemon.store.refs import parse_ref

REPO = "acme/tiny-gguf"
F16 = "tiny-llama-F16.gguf"
Q8 = "tiny-llama.q8_0.gguf"
META = {"config.json", "tokenizer.json", "README.md"}


@pytest.mark.parametrize(
    ("name", "tag"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.q8_0.gguf", "Q8_0"),
        ("ggml-model-f16.gguf", "F16"),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("qwen-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("m-IQ2_XXS.gguf", "IQ2_XXS"),
        ("m-BF16.gguf", "BF16"),
        ("mmproj-model-f16.gguf", None),  # a vision projector is no tag's file
        ("model.gguf", None),
        ("model-Q4_K_M.safetensors", None),
    ],
)
def test_file_tags(name: str, tag: str | None) -> None:
    assert gguf_tags.file_tag(name) == tag


def test_references_with_a_tag() -> None:
    ref = parse_ref("acme/m:q4_k_m")
    assert (ref.repo, ref.revision, ref.tag, str(ref)) == ("acme/m", "main", "Q4_K_M", "acme/m@main:Q4_K_M")
    assert parse_ref("acme/m:Q4_K_M").key == ref.key  # case-insensitive: one pull
    assert parse_ref("acme/m@v2:F16").stored_revision == "v2:F16"
    assert parse_ref("acme/m").tag is None
    with pytest.raises(InvalidRequest) as err:
        parse_ref("acme/m:latest-ish")
    assert err.value.param == "model" and "quantization tag" in err.value.message
    assert is_store_ref("acme/m:Q4_K_M") and is_store_ref("acme/m@v2:Q8_0")
    # The Ollama door's name:tag rule: a quantization tag stays a tag, any other is a revision.
    assert to_ref("acme/m:q8_0") == "acme/m:Q8_0"
    assert to_ref("acme/m:v2") == "acme/m@v2"
    assert to_ref("acme/m:latest") == "acme/m"
    assert to_ollama("acme/m:Q8_0") == "acme/m:Q8_0"
    assert gguf_tags.ref_name("acme/m", "main:Q8_0") == "acme/m:Q8_0"
    assert gguf_tags.ref_name("acme/m", "v2:Q8_0") == "acme/m@v2:Q8_0"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    files = {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode(),
        "tokenizer.json": b"{}",
        "README.md": b"---\npipeline_tag: text-generation\n---\n",
        F16: b"GGUF" + b"\x01" * 4000,
        Q8: b"GGUF" + b"\x02" * 2000,
        "model.safetensors": b"\x00" * 3000,
    }
    with HubServer([HubRepo(REPO, files)]) as server:
        yield server


def _store(tmp: Path, hub: HubServer) -> ModelStore:
    return ModelStore(store_settings(tmp, hub_offline=False, hub_endpoint=hub.url))


def _fetched(hub: HubServer) -> set[str]:
    """The files a pull downloaded (each is resolved first: LFS bodies come from /lfs/)."""
    return {r.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r}


@pytest.mark.usefixtures("hub_online")
def test_a_tagged_pull_fetches_only_that_file(tmp_path: Path, hub: HubServer) -> None:
    store = _store(tmp_path, hub)
    snap = store.pull(f"{REPO}:Q8_0")
    assert {p.name for p in snap.path.iterdir()} == META | {Q8}
    assert F16 not in _fetched(hub) and "model.safetensors" not in _fetched(hub)
    assert (snap.path / Q8).read_bytes() == hub.repos[REPO].files[Q8]  # verified, placed
    repo_dir = store.layout.repo(REPO)
    assert repo_dir.refs_map() == {"main:Q8_0": snap.commit}
    assert store.find(f"{REPO}:q8_0") == store.find(f"{REPO}:Q8_0") is not None
    assert store.find(REPO) is None  # a tagged pull is not the whole repository
    assert store.find(f"{REPO}@{snap.commit}") is None
    assert gguf_tags.load_option(f"{REPO}:q8_0", snap.path) == {"gguf_file": Q8}

    # A second tag joins the same snapshot; the catalog keeps both files.
    again = store.pull(f"{REPO}:f16")
    assert again.path == snap.path
    assert {p.name for p in snap.path.iterdir()} == META | {Q8, F16}
    assert {f.path for f in store.catalog.files(REPO, snap.commit or "")} == META | {Q8, F16}
    assert store.complete(again)
    listed = store.list_snapshots()
    assert [set(i.refs) for i in listed] == [{"main:Q8_0", "main:F16"}]

    # The whole repository, pulled now, reuses the files it has and adds the rest.
    before = len(_fetched(hub))
    whole = store.pull(REPO)
    assert "model.safetensors" in {p.name for p in whole.path.iterdir()}
    assert len(_fetched(hub)) == before + 1
    assert store.find(f"{REPO}:Q8_0") is not None and store.find(REPO) is not None


@pytest.mark.usefixtures("hub_online")
def test_a_tag_without_a_file_is_not_found_naming_the_tags(tmp_path: Path, hub: HubServer) -> None:
    store = _store(tmp_path, hub)
    with pytest.raises(ModelNotFound) as err:
        store.pull(f"{REPO}:Q4_K_M")
    assert err.value.status == 404
    assert f"F16 ({F16})" in err.value.message and f"Q8_0 ({Q8})" in err.value.message
    assert _fetched(hub) == set()
    assert store.layout.repo(REPO).commits() == []


@pytest.mark.usefixtures("hub_online")
def test_removing_a_tag_removes_its_snapshot_only(tmp_path: Path, hub: HubServer) -> None:
    store = _store(tmp_path, hub)
    store.pull(f"{REPO}:Q8_0")
    with pytest.raises(ModelNotFound):
        store.remove(f"{REPO}:F16")  # not here: nothing is removed
    assert store.find(f"{REPO}:Q8_0") is not None
    removed = store.remove(f"{REPO}:q8_0")
    assert len(removed.commits) == 1 and removed.freed > 0
    assert store.layout.repo(REPO).commits() == []


def test_a_projector_beside_the_model_is_not_a_second_model(tmp_path: Path) -> None:
    from hfd.backends import gguf

    (tmp_path / "model-Q8_0.GGUF").write_bytes(b"")  # the suffix in any case, as the tags read it
    (tmp_path / "mmproj-model-f16.gguf").write_bytes(b"")
    assert gguf.choose(tmp_path, None) == tmp_path / "model-Q8_0.GGUF"
    assert gguf.model_file(tmp_path) == tmp_path / "model-Q8_0.GGUF"
    assert gguf.choose(tmp_path, "mmproj-model-f16.gguf") == tmp_path / "mmproj-model-f16.gguf"  # asked for
    (tmp_path / "model-F16.gguf").write_bytes(b"")
    with pytest.raises(InvalidRequest, match="2 GGUF files"):
        gguf.choose(tmp_path, None)
