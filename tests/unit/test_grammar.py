"""backends.grammar against a real byte-level BPE tokenizer (the tiny Llama's): every spec kind
compiles, a random walk through each matcher's masks spells text that matches, bad specs are
InvalidRequest with the request field, and the compiled grammars are cached per spec."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("xgrammar")
import jsonschema
import torch
from support.json_schemas import SCHEMAS
from support.models import tiny_llama

from hfd.backends.constraints import ConstraintSpec, TokenMatcher
from hfd.backends.grammar import GrammarCache
from hfd.client.errors import InvalidRequest

# Wider than the tokenizer: a model's logits row is often padded past its vocabulary.
PADDED = 32


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama())


@pytest.fixture(scope="module")
def cache(tokenizer: Any) -> GrammarCache:
    return GrammarCache(
        tokenizer, vocab_size=len(tokenizer) + PADDED, stop_token_ids=[tokenizer.eos_token_id]
    )


def walk(cache: GrammarCache, tokenizer: Any, spec: ConstraintSpec, seed: int, limit: int = 400) -> str:
    """Random allowed tokens until the grammar ends; the decoded text (without the eos)."""
    matcher = cache.compile(spec).matcher()
    assert isinstance(matcher, TokenMatcher)
    vocab = len(tokenizer) + PADDED
    bitmask = torch.zeros((2, (vocab + 31) // 32), dtype=torch.int32)
    gen = torch.Generator().manual_seed(seed)
    tokens: list[int] = []
    for _ in range(limit):
        matcher.fill_mask(bitmask, 1)  # any row: the sampler fills one row per constrained sequence
        bits = (bitmask[1].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.reshape(-1)[:vocab].nonzero().squeeze(1)
        assert allowed.numel() > 0
        assert int(allowed.max()) < len(tokenizer)  # padding columns are never allowed
        token = int(allowed[torch.randint(allowed.numel(), (1,), generator=gen)])
        matcher.accept(token)
        if matcher.finished:
            assert token == tokenizer.eos_token_id
            return str(tokenizer.decode(tokens))
        tokens.append(token)
    raise AssertionError(f"no end within {limit} tokens: {tokenizer.decode(tokens)!r}")


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_every_schema_walk_validates(cache: GrammarCache, tokenizer: Any, index: int) -> None:
    schema = SCHEMAS[index]
    spec = ConstraintSpec("json_schema", json.dumps(schema, sort_keys=True))
    for seed in range(3):
        text = walk(cache, tokenizer, spec, seed)
        jsonschema.validate(json.loads(text), schema)


def test_json_object_is_an_object(cache: GrammarCache, tokenizer: Any) -> None:
    # Random walks through free-form JSON can nest deeply; a few seeds that end are enough.
    ended = 0
    for seed in range(12):
        try:
            text = walk(cache, tokenizer, ConstraintSpec("json_object"), seed, limit=200)
        except AssertionError:
            continue
        assert isinstance(json.loads(text), dict)
        ended += 1
    assert ended >= 1


def test_regex_choice_and_grammar(cache: GrammarCache, tokenizer: Any) -> None:
    text = walk(cache, tokenizer, ConstraintSpec("regex", "[a-c]{2}-[0-9]{3}", param="guided_regex"), 0)
    assert re.fullmatch("[a-c]{2}-[0-9]{3}", text)
    choices = ["yes", "no", "maybe so"]
    for seed in range(4):
        assert walk(cache, tokenizer, ConstraintSpec("choice", json.dumps(choices)), seed) in choices
    grammar = 'root ::= "(" digit+ ")"\ndigit ::= [0-9]'
    text = walk(cache, tokenizer, ConstraintSpec("grammar", grammar), 1, limit=2000)
    assert re.fullmatch(r"\([0-9]+\)", text)


@pytest.mark.parametrize(
    ("spec", "param", "words"),
    [
        (ConstraintSpec("json_schema", '{"type": "strin"}'), "response_format", "strin"),
        (ConstraintSpec("json_schema", "not json"), "response_format", "not valid JSON"),
        (
            ConstraintSpec("json_schema", '{"type": "array", "uniqueItems": true}'),
            "response_format",
            "uniqueItems",
        ),
        (
            ConstraintSpec("json_schema", '{"$ref": "https://example.com/s.json"}', param="guided_json"),
            "guided_json",
            "$ref",
        ),
        (
            ConstraintSpec("json_schema", '{"type": "string", "pattern": "^a+$", "maxLength": 3}'),
            "response_format",
            "pattern and minLength/maxLength",
        ),
        (ConstraintSpec("regex", "(", param="guided_regex"), "guided_regex", "parenthesis"),
        (ConstraintSpec("grammar", "root ::= x", param="guided_grammar"), "guided_grammar", "not defined"),
        (ConstraintSpec("choice", "[]", param="guided_choice"), "guided_choice", "non-empty"),
    ],
)
def test_bad_specs_are_invalid_requests(
    cache: GrammarCache, spec: ConstraintSpec, param: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        cache.compile(spec)
    assert info.value.param == param
    assert words in str(info.value)


def test_strict_decides_unlisted_properties(cache: GrammarCache, tokenizer: Any) -> None:
    schema = json.dumps({"type": "object", "properties": {}, "required": []})
    strict = cache.compile(ConstraintSpec("json_schema", schema, strict=True)).matcher()
    loose = cache.compile(ConstraintSpec("json_schema", schema, strict=False)).matcher()
    # After "{", strict allows only "}"; loose also allows a property name.
    quote = tokenizer.convert_tokens_to_ids('"')
    results = []
    for m in (strict, loose):
        m.accept(tokenizer.convert_tokens_to_ids("{"))
        bitmask = torch.zeros((1, (len(tokenizer) + PADDED + 31) // 32), dtype=torch.int32)
        m.fill_mask(bitmask, 0)
        results.append(bool((int(bitmask[0, quote // 32]) >> (quote % 32)) & 1))
    assert results == [False, True]


def test_compiled_once_per_spec_and_bounded(tokenizer: Any) -> None:
    cache = GrammarCache(tokenizer, vocab_size=len(tokenizer), size=2)
    a = ConstraintSpec("regex", "a+", param="guided_regex")
    first = cache.compile(a)
    assert cache.compile(ConstraintSpec("regex", "a+", param="response_format")) is first  # param is no key
    cache.compile(ConstraintSpec("regex", "b+"))
    cache.compile(ConstraintSpec("regex", "c+"))
    assert len(cache) == 2
    assert cache.compile(a) is not first  # evicted, least recently used first


def test_batched_fill_and_accept_match_one_row_at_a_time(cache: GrammarCache, tokenizer: Any) -> None:
    """constraints.fill_masks / accept_tokens over xgrammar matchers (one batched call each)
    give every row the mask its own matcher gives alone, at every step of a walk."""
    from hfd.backends.constraints import accept_tokens, fill_masks

    specs = [ConstraintSpec("json_schema", json.dumps(s, sort_keys=True)) for s in SCHEMAS[:4]]
    batched = [cache.compile(specs[i % 4]).matcher() for i in range(6)]
    alone = [cache.compile(specs[i % 4]).matcher() for i in range(6)]
    words = (len(tokenizer) + PADDED + 31) // 32
    gen = torch.Generator().manual_seed(7)
    for _ in range(12):
        live = [i for i in range(6) if not alone[i].finished]
        if not live:
            break
        together = torch.zeros((len(live), words), dtype=torch.int32)
        fill_masks([batched[i] for i in live], together)
        tokens = []
        for row, i in enumerate(live):
            single = torch.zeros((1, words), dtype=torch.int32)
            alone[i].fill_mask(single, 0)
            assert torch.equal(together[row], single[0])
            bits = (single[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
            allowed = bits.reshape(-1).nonzero().squeeze(1)
            tokens.append(int(allowed[torch.randint(allowed.numel(), (1,), generator=gen)]))
        accept_tokens([batched[i] for i in live], tokens)
        for i, token in zip(live, tokens, strict=True):
            alone[i].accept(token)
            assert batched[i].finished == alone[i].finished
