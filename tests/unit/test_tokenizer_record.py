"""The tokenizer record's key and file (``tokenizer_facts``), without transformers: the key
follows every file transformers reads, weights aside, and two threads writing one record at
once never collide."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from hfd.backends import tokenizer_facts
from hfd.backends.tokenizer_facts import TokenizerFacts


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "additional_chat_templates").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "tokenizer_config.json").write_text("{}")
    (model / "additional_chat_templates" / "tool_use.jinja").write_text("{{ messages }}")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    return model


def _key(model: Path, cache: Path) -> Path | None:
    return tokenizer_facts._record_path(model, cache, config=False)


def _touch(path: Path, text: str | bytes) -> None:
    """Rewrite ``path`` with a later modification time (some filesystems tick coarsely)."""
    st = path.stat()
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_an_edited_additional_chat_template_changes_the_record_key(tmp_path: Path) -> None:
    model, cache = _model(tmp_path), tmp_path / "cache"
    before = _key(model, cache)
    assert before is not None and before == _key(model, cache)
    _touch(model / "additional_chat_templates" / "tool_use.jinja", "{{ tools }}")
    assert _key(model, cache) != before


def test_the_weights_play_no_part_in_the_record_key(tmp_path: Path) -> None:
    model, cache = _model(tmp_path), tmp_path / "cache"
    before = _key(model, cache)
    _touch(model / "model.safetensors", b"\1" * 128)
    assert _key(model, cache) == before
    _touch(model / "tokenizer_config.json", '{"model_max_length": 7}')
    assert _key(model, cache) != before


def test_two_threads_writing_one_record_never_collide(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = tmp_path / "cache" / "tokenizers" / "key.json"
    facts = [
        TokenizerFacts(tokenizer="x" * 200_000, model_max_length=n, pad_token_id=0, eos_token_id=1, vocab=10,
                       chat_template=None)
        for n in range(2)
    ]  # fmt: skip
    start = threading.Barrier(2)

    def write(f: TokenizerFacts) -> None:
        start.wait()
        for _ in range(100):
            tokenizer_facts._write(record, f)

    with caplog.at_level(logging.WARNING, logger=tokenizer_facts.__name__):
        threads = [threading.Thread(target=write, args=(f,)) for f in facts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert "cannot write tokenizer record" not in caplog.text
    assert json.loads(record.read_text()) in [asdict(f) for f in facts]
    assert [p.name for p in record.parent.iterdir()] == ["key.json"]  # no temporary file left
