"""API keys on the Ollama routes: a key's model allow-list is checked against the model an
Ollama name stands for (``chat:latest`` is ``chat``; a copy is what it was copied from)."""

from __future__ import annotations

from pathlib import Path

import ollama
import pytest
from support.daemon import start_daemon
from support.fake_models import fake_model

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.daemon.access.keys import KeyStore


def test_allow_lists_see_through_ollama_names_and_copies(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "work" / "state")
    _, chat_only = store.create("chat-only", models=["chat"])
    _, admin = store.create("admin", scopes="inference,models")
    models = {
        "chat": fake_model(tmp_path / "m", "llama"),
        "other": fake_model(tmp_path / "m", "llama", "other"),
    }
    d = start_daemon(tmp_path / "work", models, args=["--auth-required", "true"], env={FAKE_ENGINE_ENV: "1"})
    try:
        mine = ollama.Client(host=d.http, headers={"Authorization": f"Bearer {chat_only}"}, timeout=60)
        messages = [{"role": "user", "content": "hi"}]
        assert mine.chat(model="chat:latest", messages=messages, options={"num_predict": 2}).message.content
        with pytest.raises(ollama.ResponseError) as info:
            mine.chat(model="other", messages=messages)
        assert info.value.status_code == 403
        ollama.Client(host=d.http, headers={"Authorization": f"Bearer {admin}"}, timeout=60).copy(
            "other", "sneaky"
        )
        with pytest.raises(ollama.ResponseError) as info:  # the copy is still "other"
            mine.chat(model="sneaky", messages=messages)
        assert info.value.status_code == 403
        with pytest.raises(ollama.ResponseError) as info:
            ollama.Client(host=d.http, timeout=60).chat(model="chat", messages=messages)
        assert info.value.status_code == 401 and isinstance(info.value.error, str)
    finally:
        d.stop()
