"""Incremental detokenization and stop-string matching for streamed generation.

``IncrementalDetokenizer`` turns a growing list of token ids into text pieces without
re-decoding the whole output at every token. It decodes only a short window: the tokens of
the last piece emitted (``prefix``) plus the tokens since (``read``). A new piece is the part of
the window's text beyond the prefix's text, and it is held back while it ends in U+FFFD, the
mark of a multi-byte character split across tokens. Decoding the window with the previous
piece's tokens in front keeps tokenizer-specific joins right (SentencePiece's leading spaces,
WordPiece's ``##`` continuations). The window only grows while characters stay incomplete, so
the cost per token is O(1) amortised. This is the scheme vLLM and TGI use.

``StopMatcher`` cuts the text at the first stop string. Text that could be the start of a stop
string is held back until the next pieces decide it; the stop string and anything after it are
never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]

# Prompt tokens decoded in front of the first output tokens, so the first piece gets the same
# spacing it would have in the middle of the text.
PROMPT_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Decode, prompt_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._tokens: list[int] = list(prompt_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._tokens)
        # The decoded text of tokens[prefix:read]; cached so each token costs one decode.
        self._prefix_text = decode(self._tokens) if self._tokens else ""

    def push(self, token_ids: Sequence[int]) -> str:
        """The new text completed by ``token_ids`` ("" while a character is incomplete)."""
        if not token_ids:
            return ""
        self._tokens.extend(token_ids)
        text = self._decode(self._tokens[self._prefix :])
        if len(text) <= len(self._prefix_text) or text.endswith(_REPLACEMENT):
            return ""
        piece = text[len(self._prefix_text) :]
        self._prefix_text = self._decode(self._tokens[self._read :])
        self._prefix = self._read
        self._read = len(self._tokens)
        return piece

    def flush(self) -> str:
        """Text still held back at the end of the output (an incomplete character, as U+FFFD)."""
        if self._read == len(self._tokens):
            return ""
        text = self._decode(self._tokens[self._prefix :])
        piece = text[len(self._prefix_text) :]
        self._read = self._prefix = len(self._tokens)
        self._prefix_text = ""
        return piece


class StopMatcher:
    """Feeds text pieces through; returns what is safe to emit and whether a stop matched."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string that ended the output

    def push(self, text: str, *, match: bool = True) -> str:
        """Text that can be emitted now. After a match, ``stopped`` is set and the text up to the
        stop string is returned; with ``match=False`` (``min_tokens`` not reached) nothing is cut."""
        if self.stopped:
            return ""
        pending = self._held + text
        if not self._stops:
            self._held = ""
            return pending
        if match:
            cut = -1
            for stop in self._stops:
                at = pending.find(stop)
                if at >= 0 and (cut < 0 or at < cut):
                    cut, self.matched = at, stop
            if cut >= 0:
                self.stopped = True
                self._held = ""
                return pending[:cut]
        hold = self._partial_suffix(pending) if match else 0
        self._held = pending[len(pending) - hold :] if hold else ""
        return pending[: len(pending) - hold]

    def flush(self) -> str:
        """The held-back text, emitted when the output ends for another reason."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
