"""Model references: repo ids, revisions, CIDs, paths and aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.client.errors import InvalidRequest
from hfd.daemon.settings import ModelSpec, load_settings
from hfd.daemon.store.refs import parse_ref

CID = "bafybeihwr75viuzrw7m66hpclvrry3zrqwb3nue6l7u26fn4hxwyw4e7wa"


def test_repo_refs() -> None:
    ref = parse_ref("acme/tiny")
    assert (ref.kind, ref.repo, ref.revision, ref.explicit_revision) == ("repo", "acme/tiny", "main", False)
    ref = parse_ref("acme/tiny@v1.0")
    assert (ref.repo, ref.revision, ref.explicit_revision) == ("acme/tiny", "v1.0", True)
    assert parse_ref("gpt2").repo == "gpt2"
    assert parse_ref("acme/tiny@refs/pr/1").revision == "refs/pr/1"
    # Concurrent pulls share work per snapshot, not per repo.
    assert parse_ref("acme/tiny").key == parse_ref("acme/tiny@main").key != parse_ref("acme/tiny@v1").key


def test_existing_directory_wins_like_from_pretrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme" / "local").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    ref = parse_ref("acme/local")
    assert (ref.kind, ref.path) == ("path", tmp_path / "acme" / "local")
    assert parse_ref("acme/remote").kind == "repo"


def test_ipfs_and_path_refs(tmp_path: Path) -> None:
    ref = parse_ref(f"ipfs://{CID}")
    assert (ref.kind, ref.cid) == ("ipfs", CID)
    assert parse_ref(str(tmp_path)).path == tmp_path
    assert parse_ref("./x").kind == "path"
    assert parse_ref("~/x").path == Path("~/x").expanduser().resolve()


@pytest.mark.parametrize(
    "text",
    ["", "  ", "a/b/c", "acme/ti ny", "acme--x/y", "acme/x@", "acme/x@../../etc", "ipfs://nope", "ipfs://"],
)
def test_bad_refs_are_invalid_requests(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_ref(text)


def test_alias_expands_with_its_cid_and_pickle_permission() -> None:
    settings = load_settings(
        cli={"models": (ModelSpec(ref="acme/tiny@v2", name="tiny", cid=CID, allow_pickle=True),)}, environ={}
    )
    ref = parse_ref("tiny", settings)
    assert (ref.text, ref.repo, ref.revision, ref.cid, ref.allow_pickle) == (
        "tiny",
        "acme/tiny",
        "v2",
        CID,
        True,
    )
    # The spec itself (what the model manager holds) parses the same way.
    spec = settings.models[0]
    assert parse_ref(spec).repo == "acme/tiny" and parse_ref(spec).text == "tiny"
    # An unknown name is not an alias.
    assert parse_ref("other/model", settings).allow_pickle is False
