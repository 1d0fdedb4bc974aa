"""Requests may name store references that are not configured; never local paths."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from hfd.client.errors import InvalidRequest, ModelNotFound, ModelUnavailable
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.refs import detect_task, hide_paths, is_store_ref
from hfd.daemon.settings import ModelSpec, load_settings
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


def _offline(tmp_path: Path, **cli: object) -> ModelManager:
    settings = load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "s"),
            "HFD_CACHE_DIR": str(tmp_path / "c"),
            "HF_HUB_OFFLINE": "1",
        },
        cli={"hf_cache_dir": str(tmp_path / "hf"), "hub_offline": "true", "ipfs_enabled": "false", **cli},
    )
    return ModelManager(settings, resolve=resolver(settings))


def test_names_that_never_resolve_leave_no_entry(tmp_path: Path) -> None:
    manager = _offline(tmp_path, models=["chat=/nonexistent/model"])
    before = [s.public_name for s in manager.specs()]

    async def go() -> None:
        for i in range(300):
            with pytest.raises(ModelNotFound):
                await manager.load(f"someorg/missing-{i}")
            with pytest.raises(ModelNotFound):
                manager.identity(f"otherorg/missing-{i}") or await manager.load(f"otherorg/missing-{i}")

    anyio.run(go)
    assert [s.public_name for s in manager.specs()] == before
    assert manager._slots == {}  # nothing kept per name either
    assert manager.breakers.tripped() == {}


def test_a_name_that_resolves_becomes_an_entry(tmp_path: Path) -> None:
    from support.models import tiny_bert

    seen: list[str] = []

    def resolve(spec: ModelSpec) -> Path:
        seen.append(spec.ref)
        return tiny_bert()

    settings = load_settings(
        environ={"HFD_STATE_DIR": str(tmp_path / "s"), "HFD_CACHE_DIR": str(tmp_path / "c")}
    )
    manager = ModelManager(settings, resolve=resolve)
    with pytest.raises(InvalidRequest, match="task must be"):
        # Resolved, then refused for its own reasons: a stored model, so it is listed.
        anyio.run(manager._load, ModelSpec(ref="org/stored", task="nonsense"))
    assert "org/stored" in [s.public_name for s in manager.specs()]


def test_a_non_finite_keep_alive_is_refused_by_the_manager(tmp_path: Path) -> None:
    manager = _offline(tmp_path)

    async def go() -> None:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(InvalidRequest) as info:
                await manager.load("someorg/model", value)
            assert info.value.param == "keep_alive"
            with pytest.raises(InvalidRequest):
                async with manager.acquire("someorg/model", value):
                    pass

    anyio.run(go)


def test_errors_for_missing_local_models_do_not_name_their_paths(tmp_path: Path) -> None:
    secret = tmp_path / "private-place" / "weights"
    settings = load_settings(
        environ={"HFD_STATE_DIR": str(tmp_path / "s"), "HFD_CACHE_DIR": str(tmp_path / "c")},
        cli={"models": [f"gone={secret}", f"hub={'org/not-cached'}"], "hf_cache_dir": str(tmp_path / "hf")},
    )
    manager = ModelManager(settings)  # the manager's own resolver: local paths and the HF cache

    async def go() -> list[str]:
        messages = []
        for name in ("gone", "hub"):
            with pytest.raises(ModelNotFound) as info:
                await manager.load(name)
            messages.append(str(info.value.to_dict() if hasattr(info.value, "to_dict") else info.value))
        (tmp_path / "not-a-model").mkdir()
        with pytest.raises(ModelUnavailable) as unavailable:
            detect_task(tmp_path / "not-a-model")
        messages.append(unavailable.value.message)
        return messages

    for message in anyio.run(go):
        assert str(tmp_path) not in message and "private-place" not in message, message


def test_an_engine_error_reaches_the_client_without_the_model_directory(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the error is the torch engine's, on a broken model")
    broken = tmp_path / "private-place" / "model"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    settings = load_settings(
        environ={"HFD_STATE_DIR": str(tmp_path / "s"), "HFD_CACHE_DIR": str(tmp_path / "c")}
    )
    manager = ModelManager(settings, resolve=lambda spec: broken)
    spec = ModelSpec(ref="org/broken", engine="torch", device="cpu")

    async def go() -> str:
        manager._specs[spec.public_name] = spec
        with pytest.raises((ModelUnavailable, InvalidRequest)) as info:
            await manager.load("org/broken")
        return info.value.message

    message = anyio.run(go)
    assert "private-place" not in message and str(tmp_path) not in message, message
    assert "org/broken" in message


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("no file named model.safetensors in directory /var/lib/hfd/models/x", "in directory <path>"),
        ("cannot read '/home/me/.cache/huggingface/hub/config.json'", "cannot read '<path>'"),
        ("~/models/x is gone", "<path> is gone"),
        ("torch/cpu: failed; org/name@main and ipfs://bafyabc are refs", None),
        ("see https://huggingface.co/org/name", None),
    ],
)
def test_hide_paths(message: str, shown: str | None) -> None:
    out = hide_paths(message)
    if shown is None:
        assert out == message
    else:
        assert shown in out and "/" not in out.replace("<path>", "")
