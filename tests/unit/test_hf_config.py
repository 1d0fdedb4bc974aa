"""Config fields read through transformers' config classes, whatever an architecture calls them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.backends import _hf

transformers = pytest.importorskip("transformers")


def _saved(tmp_path: Path, config: object) -> object:
    config.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    return _hf.model_config(tmp_path)


def test_distilbert_width_is_read_as_hidden_size(tmp_path: Path) -> None:
    config = _saved(tmp_path, transformers.DistilBertConfig(dim=48, n_heads=4, hidden_dim=96))
    assert "hidden_size" not in (tmp_path / "config.json").read_text()  # it is `dim` on disk
    assert _hf.config_int(config, "hidden_size") == 48


@pytest.mark.parametrize(
    ("config", "tokens"),
    [
        (lambda: transformers.BertConfig(max_position_embeddings=512), 512),
        # Positions start after the padding index: 514 embeddings hold 512 tokens.
        (lambda: transformers.RobertaConfig(max_position_embeddings=514, pad_token_id=1), 512),
        (lambda: transformers.XLMRobertaConfig(max_position_embeddings=514, pad_token_id=1), 512),
        (lambda: transformers.MPNetConfig(max_position_embeddings=514, pad_token_id=1), 512),
    ],
)
def test_the_token_limit_follows_the_position_embeddings(tmp_path: Path, config: object, tokens: int) -> None:
    assert _hf.max_positions(_saved(tmp_path, config())) == tokens  # type: ignore[operator]
