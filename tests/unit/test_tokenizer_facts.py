"""An encoder's tokenizer and limits, read through transformers once and from their record after:
a later load (a restarted daemon's) builds the same head without importing transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers", reason="the encoder head is a tokenizers.Tokenizer")
pytest.importorskip("transformers", reason="the first read of a model goes through transformers")

from support.models import tiny_bert

from hfd.backends.numpy_encoder import load_head

TEXTS = ["hello world", "a much longer sentence, with punctuation!", "UPPER case"]

# A fresh process, as a restarted daemon is: the head from the record, and what it imported.
CHILD = """
import json, sys
from pathlib import Path
from hfd.backends.numpy_encoder import load_head
head = load_head(Path(sys.argv[1]), cache_dir=Path(sys.argv[2]))
print(json.dumps({"ids": [e.ids for e in head.tokenizer.encode_batch(json.loads(sys.argv[3]))],
                  "max_length": head.max_length, "dimensions": head.dimensions, "pad": head.pad_token_id,
                  "transformers": "transformers" in sys.modules, "torch": "torch" in sys.modules}))
"""


def _model(tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bert(), tmp_path / "bert"))


def _child(model: Path, cache: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(cache), json.dumps(TEXTS)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_recorded_head_loads_without_transformers_and_equals_the_first(tmp_path: Path) -> None:
    model, cache = _model(tmp_path), tmp_path / "cache"
    first = load_head(model, cache_dir=cache)
    assert len(list((cache / "tokenizers").glob("*.json"))) == 1
    again = _child(model, cache)
    assert again["transformers"] is False and again["torch"] is False
    assert again["ids"] == [e.ids for e in first.tokenizer.encode_batch(TEXTS)]
    assert (again["max_length"], again["dimensions"], again["pad"]) == (
        first.max_length, first.dimensions, first.pad_token_id,
    )  # fmt: skip


def test_a_changed_tokenizer_file_is_read_through_transformers_again(tmp_path: Path) -> None:
    model, cache = _model(tmp_path), tmp_path / "cache"
    (model / "sentence_bert_config.json").unlink()  # the tokenizer's own limit then applies
    before = load_head(model, cache_dir=cache)
    config_file = model / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["model_max_length"] = 7  # below the position limit: it sets the head's max length
    config_file.write_text(json.dumps(config))
    again = _child(model, cache)
    assert again["max_length"] == 7 != before.max_length
    assert again["transformers"] is True  # the record did not match the changed folder
    assert len(list((cache / "tokenizers").glob("*.json"))) == 2


def test_remote_code_models_are_not_recorded(tmp_path: Path) -> None:
    model, cache = _model(tmp_path), tmp_path / "cache"
    load_head(model, trust_remote_code=True, cache_dir=cache)
    assert not (cache / "tokenizers").exists()
