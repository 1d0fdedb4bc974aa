"""Tiny random-weight encoders of every popular family, for the encoder matrix.

Each family gets the tokenizer kind its real checkpoints use, trained (or derived) on the spot
from the shared corpus: WordPiece (BERT, DistilBERT, MPNet), byte-level BPE (RoBERTa,
ModernBERT), Unigram (XLM-RoBERTa, DeBERTa-v2). Weights are drawn with a wider std than the
default so token embeddings depend on their context (and on the padding mask: an engine that
attends to padding gives visibly different vectors).

The sentence-transformers folders wrap the tiny BERT in both module layouts:

- ``old``: ``sentence_transformers.models.*`` names, ``word_embedding_dimension`` and one
  boolean flag per pooling mode, written by hand exactly as sentence-transformers 2.x-5.x did;
- ``new``: saved by the installed sentence-transformers (6.x: ``sentence_transformers.base.
  modules...`` names, ``embedding_dimension``, ``pooling_mode``).

Builds are cached under ``<repo>/.cache/test-models`` like ``tests/support/models.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.models import _cached, _corpus_lines, _write_json, byte_bpe, fast_tokenizer
from support.models import wordpiece as _wordpiece

VERSION = 1
ST_VERSION = 2
HIDDEN = 32
MAX_LENGTH = 128
STD = 0.2  # the default 0.02 makes every sentence embed alike


# -- tokenizers ---------------------------------------------------------------------------------


def _around(tok: Any, cls: str, sep: str) -> Any:
    """``tok`` with RoBERTa's template: ``cls A sep`` and ``cls A sep sep B sep`` for pairs."""
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )
    return tok


def _byte_bpe(specials: list[str], cls: str, sep: str, vocab_size: int = 600) -> Any:
    return _around(byte_bpe(specials, vocab_size, prefix_space=True), cls, sep)


def _unigram(specials: list[str], unk: str, cls: str, sep: str, vocab_size: int = 400) -> Any:
    """A SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer), as XLM-R and DeBERTa-v3 use."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token=unk, show_progress=False
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    return _around(tok, cls, sep)


def _hf_tokenizer(backend: Any, **special: str) -> Any:
    return fast_tokenizer(backend, MAX_LENGTH, **special)


_BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_BERT_NAMES = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}  # fmt: skip
_ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
_ROBERTA_NAMES = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                  "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}  # fmt: skip


# -- families -----------------------------------------------------------------------------------


def _save(out: Path, model: Any, tokenizer: Any) -> None:
    import torch

    model = model.to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _common(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": STD,
    }


def _bert(out: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _hf_tokenizer(_wordpiece(_BERT_SPECIALS, "[CLS]", "[SEP]"), **_BERT_NAMES)
    config = BertConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=MAX_LENGTH, **_common(tokenizer))  # fmt: skip
    torch.manual_seed(11)
    _save(out, BertModel(config, add_pooling_layer=False), tokenizer)


def _roberta_like(out: Path, xlm: bool) -> None:
    import torch
    from transformers import RobertaConfig, RobertaModel, XLMRobertaConfig, XLMRobertaModel

    if xlm:
        backend = _unigram(_ROBERTA_SPECIALS, "<unk>", "<s>", "</s>")
        config_class, model_class = XLMRobertaConfig, XLMRobertaModel
    else:
        backend = _byte_bpe(_ROBERTA_SPECIALS, "<s>", "</s>")
        config_class, model_class = RobertaConfig, RobertaModel  # type: ignore[assignment]
    tokenizer = _hf_tokenizer(backend, **_ROBERTA_NAMES)
    # Positions start after the padding index, as in the real checkpoints (514 for 512 tokens).
    config = config_class(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=MAX_LENGTH + 2, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, **_common(tokenizer))  # fmt: skip
    torch.manual_seed(12 + xlm)
    _save(out, model_class(config, add_pooling_layer=False), tokenizer)


def _distilbert(out: Path) -> None:
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = _hf_tokenizer(_wordpiece(_BERT_SPECIALS, "[CLS]", "[SEP]"), **_BERT_NAMES)
    # DistilBERT names its width `dim` (and its FFN `hidden_dim`): there is no `hidden_size` key.
    config = DistilBertConfig(dim=HIDDEN, hidden_dim=64, n_layers=2, n_heads=4,
                              max_position_embeddings=MAX_LENGTH, **_common(tokenizer))  # fmt: skip
    torch.manual_seed(14)
    _save(out, DistilBertModel(config), tokenizer)


def _mpnet(out: Path) -> None:
    import torch
    from transformers import MPNetConfig, MPNetModel

    tokenizer = _hf_tokenizer(_wordpiece(_ROBERTA_SPECIALS, "<s>", "</s>"), **_ROBERTA_NAMES)
    config = MPNetConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=MAX_LENGTH + 2,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **_common(tokenizer))  # fmt: skip
    torch.manual_seed(15)
    _save(out, MPNetModel(config, add_pooling_layer=False), tokenizer)


def _modernbert(out: Path) -> None:
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    tokenizer = _hf_tokenizer(_byte_bpe(_BERT_SPECIALS, "[CLS]", "[SEP]"), **_BERT_NAMES)
    # A local window shorter than the longer probe texts, so the sliding-window layers matter.
    config = ModernBertConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                              max_position_embeddings=MAX_LENGTH, global_attn_every_n_layers=3, local_attention=16,
                              cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                              bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                              **_common(tokenizer))  # fmt: skip
    torch.manual_seed(16)
    _save(out, ModernBertModel(config), tokenizer)


def _deberta_v2(out: Path) -> None:
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    tokenizer = _hf_tokenizer(_unigram(_BERT_SPECIALS, "[UNK]", "[CLS]", "[SEP]"), **_BERT_NAMES)
    # DeBERTa-v3's shape: relative positions (c2p and p2c), no absolute position embeddings.
    config = DebertaV2Config(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=MAX_LENGTH, relative_attention=True, position_buckets=16,
                             max_relative_positions=-1, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                             norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0,
                             **_common(tokenizer))  # fmt: skip
    torch.manual_seed(17)
    _save(out, DebertaV2Model(config), tokenizer)


FAMILIES: dict[str, Callable[[Path], None]] = {
    "bert": _bert,
    "roberta": lambda out: _roberta_like(out, xlm=False),
    "xlm-roberta": lambda out: _roberta_like(out, xlm=True),
    "distilbert": _distilbert,
    "mpnet": _mpnet,
    "modernbert": _modernbert,
    "deberta-v2": _deberta_v2,
}


def family(name: str) -> Path:
    """The tiny random-weight encoder of one family (a plain transformers folder: hfd pools
    it with the mean, as sentence-transformers does for a folder without modules.json)."""
    return _cached(f"enc-{name}", VERSION, FAMILIES[name], None)


# -- sentence-transformers folders --------------------------------------------------------------

# name -> (pooling mode, Dense activation or None, Normalize)
ST_VARIANTS: dict[str, tuple[str, str | None, bool]] = {
    "mean-normalize": ("mean", None, True),
    "cls-dense": ("cls", "torch.nn.modules.activation.Tanh", False),
    "lasttoken-dense-normalize": ("lasttoken", "torch.nn.modules.activation.GELU", True),
}
DENSE_OUT = 24


def _copy_transformer(out: Path) -> None:
    source = family("bert")
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)


def _dense_weights(seed: int) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {
        "linear.weight": torch.randn(DENSE_OUT, HIDDEN, generator=generator) * 0.3,
        "linear.bias": torch.randn(DENSE_OUT, generator=generator) * 0.1,
    }


def _st_old(out: Path, variant: str) -> None:
    """The layout sentence-transformers wrote before 6.0, by hand."""
    from safetensors.torch import save_file

    mode, activation, normalize = ST_VARIANTS[variant]
    _copy_transformer(out)
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
             "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
             "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}  # fmt: skip
    pooling: dict[str, Any] = {"word_embedding_dimension": HIDDEN}
    pooling.update({key: name == mode for name, key in flags.items()})
    pooling["include_prompt"] = True
    _write_json(out / "1_Pooling" / "config.json", pooling)
    if activation is not None:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
        _write_json(out / "2_Dense" / "config.json",
                    {"in_features": HIDDEN, "out_features": DENSE_OUT, "bias": True,
                     "activation_function": activation})  # fmt: skip
        save_file(_dense_weights(len(variant)), str(out / "2_Dense" / "model.safetensors"))
    if normalize:
        idx = len(modules)
        modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})  # fmt: skip
        (out / f"{idx}_Normalize").mkdir()
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": MAX_LENGTH, "do_lower_case": False})


def _st_new(out: Path, variant: str) -> None:
    """Saved by the installed sentence-transformers (6.x writes the new module names)."""
    import importlib

    import torch
    from sentence_transformers import SentenceTransformer, models

    mode, activation, normalize = ST_VARIANTS[variant]
    transformer = models.Transformer(str(family("bert")), max_seq_length=MAX_LENGTH)
    modules: list[Any] = [transformer, models.Pooling(transformer.get_embedding_dimension(), mode)]
    if activation is not None:
        module, _, cls = activation.rpartition(".")
        act = getattr(importlib.import_module(module), cls)()
        dense = models.Dense(HIDDEN, DENSE_OUT, activation_function=act)
        with torch.no_grad():
            for name, value in _dense_weights(len(variant)).items():
                dense.get_parameter(name).copy_(value)
        modules.append(dense)
    if normalize:
        modules.append(models.Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    # The transformer's own files back as they were (sentence-transformers re-saves the same
    # weights plus a pooler it added): every folder then shares the BERT's exports.
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(family("bert") / name, out / name)


def st_folder(layout: str, variant: str) -> Path:
    """A sentence-transformers folder around the tiny BERT: ``layout`` ``old`` or ``new``."""
    build = _st_old if layout == "old" else _st_new
    return _cached(f"enc-st-{layout}-{variant}", ST_VERSION, lambda out: build(out, variant), None)


def st_module_types(path: Path) -> list[str]:
    return [str(m["type"]) for m in json.loads((path / "modules.json").read_text())]


# -- the probe ----------------------------------------------------------------------------------

# Varied lengths (1 to ~60 tokens) in one batch, so most rows are padded.
PROBE = [
    "hi",
    "The weather today is sunny with a light breeze from the west.",
    "Cats sleep.",
    "She opened the window and listened to the rain on the roof, then wrote a long letter to "
    "her friend about the summer in the north, the rivers and the mountains above the clouds.",
    "What is the capital of France? Paris!",
    "Numbers like 1, 2, 3, 42, 100 and 2026 appear in text too.",
]
