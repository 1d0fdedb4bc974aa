"""Requests may name store references that are not configured; never local paths."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from hfd.client.errors import ModelNotFound
from hfd.daemon.manager import ModelManager, is_store_ref
from hfd.daemon.settings import load_settings
from hfd.daemon.store import resolver


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("org/name", True),
        ("org/name@main", True),
        ("ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", True),
        ("gpt-4", False),
        ("/etc/passwd", False),
        ("../x/y", False),
        ("a/b/c", False),
        ("org/..", False),
        ("ipfs://a/b", False),
        ("ipfs://", False),
    ],
)
def test_store_refs(name: str, ok: bool) -> None:
    assert is_store_ref(name) is ok


def test_unconfigured_ref_goes_to_the_store_and_says_where_it_looked(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "s"),
            "HFD_CACHE_DIR": str(tmp_path / "c"),
            "HF_HUB_OFFLINE": "1",
        },
        cli={"hf_cache_dir": str(tmp_path / "hf"), "hub_offline": "true", "ipfs_enabled": "false"},
    )
    manager = ModelManager(settings, resolve=resolver(settings))

    async def go() -> None:
        with pytest.raises(ModelNotFound) as info:
            await manager.load("someorg/missing-model")
        assert "someorg/missing-model" in info.value.message
        assert info.value.details.get("looked_in"), info.value.details
        with pytest.raises(ModelNotFound, match="not served here"):
            await manager.load("/etc")

    anyio.run(go)
