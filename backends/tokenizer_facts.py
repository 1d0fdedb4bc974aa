"""What the OpenVINO and ONNX Runtime engines read from a model through transformers, recorded
at its first load so that later loads (a restarted daemon's) need only ``tokenizers``.

transformers imports torch and takes seconds to import; these engines read only a few facts
through it: the Rust tokenizer as transformers sets it up (added and special tokens, its
post-processor), the tokenizer's ``model_max_length``, pad and eos ids, size, named special tokens
and chat template, and (encoders) the config's position limit and hidden size under their common
names. They are written to ``<cache_dir>/tokenizers/<key>.json``, where the key is the model
folder's resolved path, the relative paths, sizes and modification times of its files but the
weights (``config.json``, the tokenizer files, ``additional_chat_templates/*.jinja``), what is
recorded, and the transformers and tokenizers versions: a changed file or library reads the
model through transformers again. A model with
remote code is always read through transformers (its code decides what the tokenizer is).
A generation engine renders the recorded chat template with ``chat_template``, as transformers
would (``RecordedTokenizer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from hfd._atomic_files import atomic_write_text
from hfd.backends import _hf, chat_template
from hfd.backends.exports import dist_version
from hfd.backends.formats import WEIGHT_SUFFIXES, file_stats

log = logging.getLogger(__name__)

RECORD_REVISION: Final = 1  # bump when what a record holds changes
_DIR: Final = "tokenizers"


@dataclass(frozen=True)
class TokenizerFacts:
    tokenizer: str  # the Rust tokenizer's JSON (``Tokenizer.to_str``), no padding
    model_max_length: int  # the transformers tokenizer's
    pad_token_id: int | None
    eos_token_id: int | None
    vocab: int  # len() of the transformers tokenizer: its vocabulary with the added tokens
    chat_template: str | dict[str, str] | None
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token ...: template variables
    max_positions: int = 0  # ``_hf.max_positions`` of the config (read for encoders only)
    hidden_size: int = 0  # the config's hidden size (encoders only); 0 when it has none

    def rust_tokenizer(self) -> Any:
        """A fresh ``tokenizers.Tokenizer``, no padding, as ``_hf.fast_tokenizer`` gives it."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer)
        tokenizer.no_padding()
        return tokenizer


def tokenizer_facts(
    path: Path, *, trust_remote_code: bool, cache_dir: Path | None, config: bool, needed: str
) -> TokenizerFacts:
    """The model's facts (``config``: the config's too): from its record when one is there,
    else through transformers, then recorded when there is a cache directory. ``needed`` ends
    the message when the model has no fast tokenizer (who needs one)."""
    record = None if cache_dir is None or trust_remote_code else _record_path(path, cache_dir, config)
    if record is not None:
        found = _read(record)
        if found is not None:
            return found
    facts = _through_transformers(path, trust_remote_code, config, needed)
    if record is not None:
        _write(record, facts)
    return facts


class RecordedTokenizer:
    """What a generation engine reads of a transformers tokenizer (``_hf.PromptTokens``), from
    its facts: limits, special tokens, the chat template, rendered as transformers renders it."""

    def __init__(self, facts: TokenizerFacts) -> None:
        self._facts = facts
        self.chat_template = facts.chat_template
        self.model_max_length = facts.model_max_length
        self.eos_token_id = facts.eos_token_id
        self.pad_token_id = facts.pad_token_id

    def __len__(self) -> int:
        return self._facts.vocab

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tokenize: bool = False,
        add_generation_prompt: bool = False,
    ) -> str:
        if tokenize:
            raise ValueError("a recorded tokenizer renders text only; tokenise it with the Rust tokenizer")
        return chat_template.render(
            chat_template.select(self.chat_template, tools), messages, tools=tools,
            add_generation_prompt=add_generation_prompt, special_tokens=self._facts.special_tokens,
        )  # fmt: skip


def _through_transformers(path: Path, trust_remote_code: bool, config: bool, needed: str) -> TokenizerFacts:
    hf_tokenizer, tokenizer = _hf.fast_tokenizer(path, trust_remote_code=trust_remote_code, needed=needed)
    pad, eos = hf_tokenizer.pad_token_id, hf_tokenizer.eos_token_id
    template = getattr(hf_tokenizer, "chat_template", None)
    facts = TokenizerFacts(
        tokenizer=tokenizer.to_str(),
        model_max_length=int(hf_tokenizer.model_max_length),
        pad_token_id=int(pad) if pad is not None else None,
        eos_token_id=int(eos) if eos is not None else None,
        vocab=len(hf_tokenizer),
        chat_template=template if isinstance(template, (str, dict)) else None,
        special_tokens={str(k): str(v) for k, v in hf_tokenizer.special_tokens_map.items()},
    )
    if not config:
        return facts
    model_config = _hf.model_config(path, trust_remote_code=trust_remote_code)
    return TokenizerFacts(
        **{**asdict(facts), "max_positions": _hf.max_positions(model_config),
           "hidden_size": _hf.config_int(model_config, "hidden_size")},
    )  # fmt: skip


def _record_path(path: Path, cache_dir: Path, config: bool) -> Path | None:
    try:
        resolved = path.resolve()
        # Every file but the weights: transformers reads more than the top level (a tokenizer's
        # additional_chat_templates/*.jinja).
        files = file_stats(resolved, skip_suffixes=WEIGHT_SUFFIXES)
    except OSError:
        return None
    data = {
        "path": str(resolved),
        "files": files,
        "config": config,
        "transformers": dist_version("transformers"),
        "tokenizers": dist_version("tokenizers"),
        "revision": RECORD_REVISION,
    }
    key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir / _DIR / f"{key}.json"


def _read(record: Path) -> TokenizerFacts | None:
    try:
        data: Any = json.loads(record.read_text(encoding="utf-8"))
        return TokenizerFacts(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:  # damaged or of another layout: read anew
        log.warning("tokenizer record unreadable", extra={"path": str(record), "error": repr(exc)})
        return None


def _write(record: Path, facts: TokenizerFacts) -> None:
    try:  # a temporary name of its own: two loads of one model may write its record at once
        atomic_write_text(record, json.dumps(asdict(facts)))
    except OSError as exc:  # a record only saves time; never fail a load over it
        log.warning("cannot write tokenizer record", extra={"path": str(record), "error": repr(exc)})
