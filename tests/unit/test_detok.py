"""Incremental detokenization and stop strings, with real tokenizers (byte-level BPE and
WordPiece) built locally."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from support.models import minilm, tiny_llama

from hfd.daemon.scheduler.detok import IncrementalDetokenizer, StopMatcher

TEXT = "Héllo wörld, 日本語 and 🙂 emoji; the quick brown foxes jumped unbelievably far."

Decode = Callable[[Sequence[int]], str]


def _tokenizer(build: Callable[[], Path]) -> tuple[Callable[[str], list[int]], Decode]:
    pytest.importorskip("transformers", reason="real tokenizers, built and read with transformers")
    path = build()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def encode(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False))

    def decode(ids: Sequence[int]) -> str:
        return str(tok.decode(list(ids), skip_special_tokens=True))

    return encode, decode


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> tuple[Callable[[str], list[int]], Decode]:
    return _tokenizer(tiny_llama if request.param == "bpe" else minilm)


def _stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    pieces = [detok.push([t]) for t in ids]
    pieces.append(detok.flush())
    return pieces


def test_pieces_join_to_the_full_decode(tokenizer: tuple[Callable[[str], list[int]], Decode]) -> None:
    encode, decode = tokenizer
    prompt = encode("Say something:")
    out = encode(" " + TEXT)
    pieces = _stream(IncrementalDetokenizer(decode, prompt), out)
    # What the output adds to the prompt's text, spacing included.
    expected = decode(prompt + out)[len(decode(prompt)) :]
    assert "".join(pieces) == expected
    assert not any("\ufffd" in p for p in pieces)


def test_multibyte_characters_wait_until_complete() -> None:
    encode, decode = _tokenizer(tiny_llama)
    ids = encode("🙂")
    assert len(ids) > 1, "the emoji should take several byte-level tokens"
    detok = IncrementalDetokenizer(decode, encode("x"))
    pieces = [detok.push([t]) for t in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1)
    assert pieces[-1] == "🙂"


def test_several_tokens_at_once(tokenizer: tuple[Callable[[str], list[int]], Decode]) -> None:
    encode, decode = tokenizer
    prompt, out = encode("Q:"), encode(" " + TEXT)
    detok = IncrementalDetokenizer(decode, prompt)
    pieces = [detok.push(out[i : i + 3]) for i in range(0, len(out), 3)] + [detok.flush()]
    assert "".join(pieces) == decode(prompt + out)[len(decode(prompt)) :]


def test_window_stays_short(tokenizer: tuple[Callable[[str], list[int]], Decode]) -> None:
    """Each push decodes a few tokens, not the whole output so far."""
    encode, decode = tokenizer
    seen: list[int] = []

    def counting(ids: Sequence[int]) -> str:
        seen.append(len(ids))
        return decode(ids)

    out = encode(" " + TEXT * 6)
    detok = IncrementalDetokenizer(counting, encode("Q:"))
    for t in out:
        detok.push([t])
    assert len(out) > 100
    assert max(seen) <= 12


def test_an_incomplete_character_is_flushed_at_the_end() -> None:
    encode, decode = _tokenizer(tiny_llama)
    ids = encode("ab🙂")
    detok = IncrementalDetokenizer(decode, [])
    text = "".join(detok.push([t]) for t in ids[:-1])
    assert text == "ab"
    assert detok.flush() == "\ufffd" * len(decode(ids[:-1])[2:])


# -- stop strings --------------------------------------------------------------------------


def _feed(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out = []
    for piece in pieces:
        out.append(matcher.push(piece))
        if matcher.stopped:
            return out, True
    out.append(matcher.flush())
    return out, False


def test_stop_string_inside_one_piece() -> None:
    out, stopped = _feed(StopMatcher(["END"]), ["hello ", "wor", "ld END here", "more"])
    assert stopped
    assert "".join(out) == "hello world "


def test_stop_string_spanning_pieces_is_held_back_until_decided() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.push("abc<|") == "abc"
    assert matcher.push("en") == ""
    assert matcher.push("d|>tail") == ""
    assert matcher.stopped


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    matcher = StopMatcher(["<|end|>"])
    assert matcher.push("abc<|e") == "abc"
    assert matcher.push("x") == "<|ex"
    assert not matcher.stopped
    assert matcher.push("<") == ""
    assert matcher.flush() == "<"


def test_earliest_of_several_stops_wins() -> None:
    out, stopped = _feed(StopMatcher(["world", "lo w"]), ["hel", "lo world"])
    assert stopped
    assert "".join(out) == "hel"


def test_no_match_when_matching_is_off() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.push("axb", match=False) == "axb"
    assert not matcher.stopped
    assert matcher.push("cxd") == "c"
    assert matcher.stopped


def test_no_stops_pass_everything_through() -> None:
    out, stopped = _feed(StopMatcher([]), ["a", "b", ""])
    assert not stopped
    assert "".join(out) == "ab"
