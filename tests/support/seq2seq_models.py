"""Tiny random-weight encoder-decoder models (T5, BART, Marian) for the seq2seq task.

Each family gets a tokenizer trained here on the shared corpus with its real special-token
layout: T5 and Marian a SentencePiece-style (Metaspace) BPE whose inputs end in ``</s>`` and whose
decoder starts from ``<pad>``; BART a byte-level BPE with ``<s> ... </s>`` inputs, ``</s>`` as the
decoder start and a forced ``<s>`` as the first generated token (as bart-large's config has).
BART also carries a chat template, so both chat rules (template, last user message) are tested.
The output head is untied from the embeddings and weights are drawn with std 0.05: a tied head or
a wider std makes these 2-layer post-norm models repeat one token whatever the input, and a
test of positions and cross-attention needs replies that depend on both.

Models are cached under ``<repo>/.cache/test-models/seq2seq-<family>-v<N>`` and written
atomically, like ``support.models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.models import _cached, _corpus_lines

SEQ2SEQ_VERSION = 2
VOCAB = 400
FAMILIES = ("t5", "bart", "marian")
# A plain role-prefixed template: rendered to text, then encoded with the tokenizer's own specials.
BART_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
)


def _tokenizer(specials: list[str], *, metaspace: bool, single: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet: list[str] = []
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    named = [s for s in ("<s>", "</s>") if s in single]
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(s, tok.token_to_id(s)) for s in named]
    )
    return tok


def _config(family: str, tokenizer: Any) -> Any:
    from transformers import AutoConfig

    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if family == "t5":
        return AutoConfig.for_model(
            "t5", d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32,
            decoder_start_token_id=tokenizer.pad_token_id, initializer_factor=4.0,
            tie_word_embeddings=False, **ids,
        )  # fmt: skip
    shape = {
        "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
        "max_position_embeddings": 128, "init_std": 0.05, "forced_eos_token_id": None,
        "tie_word_embeddings": False, "scale_embedding": False,
    }  # fmt: skip
    if family == "bart":
        return AutoConfig.for_model(
            "bart", bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
            forced_bos_token_id=tokenizer.bos_token_id, **shape, **ids,
        )  # fmt: skip
    return AutoConfig.for_model(
        "marian", decoder_start_token_id=tokenizer.pad_token_id, decoder_vocab_size=len(tokenizer),
        share_encoder_decoder_embeddings=True, **shape, **ids,
    )  # fmt: skip


def _build(family: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig, PreTrainedTokenizerFast

    if family == "bart":
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        tok = _tokenizer(specials, metaspace=False, single="<s> $A </s>")
        bos: dict[str, str] = {"bos_token": "<s>"}
    else:  # T5 and Marian: </s> ends the input, no BOS
        specials = ["<pad>", "</s>", "<unk>"] if family == "t5" else ["</s>", "<unk>", "<pad>"]
        tok = _tokenizer(specials, metaspace=True, single="$A </s>")
        bos = {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=128,
        **bos,
    )
    if family == "bart":
        tokenizer.chat_template = BART_CHAT_TEMPLATE
    config = _config(family, tokenizer)
    torch.manual_seed(4321)
    model: Any = AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        forced_bos_token_id=tokenizer.bos_token_id if family == "bart" else None,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def seq2seq_model(family: str, path: Path | None = None) -> Path:
    """The tiny model of ``family`` (one of ``FAMILIES``), built once and cached."""
    if family not in FAMILIES:
        raise ValueError(f"unknown seq2seq family {family!r}; known: {', '.join(FAMILIES)}")
    return _cached(f"seq2seq-{family}", SEQ2SEQ_VERSION, lambda out: _build(family, out), path)
