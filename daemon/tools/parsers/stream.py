"""The one tool-call parser: a family (``Family``) says how its calls are marked, and
``CallStream`` reads a model's output as it arrives, sending content deltas and OpenAI
``delta.tool_calls`` pieces (index, id, type and function name first, then the arguments as they
come), holding back text that may be the start of a call marker.

The whole-text parse (``parse``) is this stream fed everything at once, so a streamed reply and a
whole one are the same calls and the same content, however the text was cut into chunks.

Rules, the same for every family:

- content is the text before the first call (trailing whitespace before a call dropped); once
  calls began, text between and after them is dropped (as vLLM does);
- a region that turns out not to be a call before any of its call was sent stays content;
- a call whose JSON breaks after its name was sent (output cut by ``max_tokens``) is dropped
  from the whole-text result; a stream has already sent its pieces;
- with ``parallel=False`` only the first call is kept.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from hfd.daemon.tools.parsers.scan import (
    INCOMPLETE,
    INVALID,
    Head,
    call_from_value,
    call_head,
    loose_call,
    skip_ws,
    value_end,
)


@dataclass(frozen=True)
class Family:
    """How one model family marks its tool calls."""

    name: str
    markers: tuple[str, ...] = ()  # open a call region anywhere in the output
    bare: str = ""  # characters that open a call region at the start of the output
    close: str | None = None  # ends each call (Hermes: "</tool_call>")
    separator: str | None = None  # between calls outside an array (Llama 3: ";")


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Parsed:
    content: str | None
    calls: list[ToolCall] = field(default_factory=list)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class CallStream:
    """Feed text with ``feed``; each call returns the deltas it completes. ``finish`` flushes."""

    def __init__(self, family: Family, *, parallel: bool = True) -> None:
        self.family = family
        self.parallel = parallel
        self.calls: list[ToolCall] = []  # complete calls whose JSON parsed
        self.content = ""  # the content sent
        self._buf = ""
        self._pos = 0
        self._state = "text"
        self._final = False
        self._started = False  # non-whitespace content was seen: a bare region can no longer open
        self._in_calls = False  # a call was sent: later text is dropped
        self._ws = ""  # held trailing whitespace of the content
        self._region = 0  # where the current region began (its marker or bare bracket)
        self._region_body = 0  # just past the marker
        self._region_sent = False  # a call of this region was sent
        self._array = False
        self._obj = 0  # the current call object's start
        self._args = 0  # its arguments' start, and how far they were sent
        self._sent_args = 0
        self._index = -1  # the current call's index in the reply
        self._current: ToolCall | None = None
        self._out: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ public

    def feed(self, text: str) -> list[dict[str, Any]]:
        self._buf += text
        self._run()
        return self._take()

    def finish(self) -> list[dict[str, Any]]:
        self._final = True
        self._run()
        held, self._ws = self._ws, ""
        if not self._in_calls and held:
            self._send_content(held, force=True)
        return self._take()

    @property
    def called(self) -> bool:
        return self._index >= 0

    # ------------------------------------------------------------------ states

    def _run(self) -> None:
        while getattr(self, f"_st_{self._state}")():
            pass

    def _st_text(self) -> bool:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return False
        fam = self.family
        if fam.bare and not self._started and not self._in_calls:
            i = skip_ws(buf, pos)
            if i >= len(buf):
                if self._final:
                    self._send_content(buf[pos:])
                    self._pos = len(buf)
                return False
            rest = buf[i:]
            if not self._final and any(m.startswith(rest) and m != rest for m in fam.markers):
                return False  # a marker (Mistral's "[TOOL_CALLS]" opens with "[") may be arriving
            if buf[i] in fam.bare and not any(rest.startswith(m) for m in fam.markers):
                self._send_content(buf[pos:i])
                self._open_region(i, i)
                return True
            self._started = True
        found = [(buf.find(m, pos), m) for m in fam.markers]
        hits = [(k, m) for k, m in found if k >= 0]
        if hits:
            k, marker = min(hits)
            self._send_content(buf[pos:k])
            self._open_region(k, k + len(marker))
            return True
        hold = 0 if self._final else _partial_suffix(buf, pos, fam.markers)
        end = len(buf) - hold
        if end > pos:
            self._send_content(buf[pos:end])
            self._pos = end
            return True
        return False

    def _open_region(self, start: int, body: int) -> None:
        self._region, self._region_body, self._pos = start, body, body
        self._region_sent = False
        self._array = False
        self._state = "region"

    def _st_region(self) -> bool:
        i = skip_ws(self._buf, self._pos)
        if i >= len(self._buf):
            return self._wait_or_fail()
        if self._buf[i] == "[":
            self._array = True
            self._pos = i + 1
        else:
            self._pos = i
        self._state = "object"
        return True

    def _st_object(self) -> bool:
        buf = self._buf
        i = skip_ws(buf, self._pos)
        if i >= len(buf):
            return self._wait_or_fail()
        self._obj = i
        head = call_head(buf, i)
        if isinstance(head, Head):
            self._start_call(head.name)
            self._args = self._sent_args = head.args
            self._state = "args"
            return True
        if head == INCOMPLETE:
            return self._wait_or_fail()
        # Not in the usual key order: the call is sent whole once its object is complete.
        end = value_end(buf, i)
        if end == INCOMPLETE:
            return self._wait_or_fail()
        got = loose_call(buf[i:end]) if end != INVALID else None
        if got is None:
            return self._fail()
        self._start_call(got[0])
        self._send_args(got[1])
        self._complete(got[1])
        self._pos = end
        self._state = "after"
        return True

    def _st_args(self) -> bool:
        buf = self._buf
        end = value_end(buf, self._args)
        if end == INVALID:
            return self._fail()
        upto = len(buf) if end == INCOMPLETE else end
        if upto > self._sent_args:
            self._send_args(buf[self._sent_args : upto])
            self._sent_args = upto
        if end == INCOMPLETE:
            return self._wait_or_fail()
        obj_end = value_end(buf, self._obj)
        if obj_end == INCOMPLETE:
            return self._wait_or_fail()
        value: Any = None
        if obj_end != INVALID:
            try:
                value = json.loads(buf[self._obj : obj_end])
            except ValueError:
                value = None
        got = call_from_value(value)
        if got is None:
            return self._fail()
        self._complete(buf[self._args : end])
        self._pos = obj_end
        self._state = "after"
        return True

    def _st_after(self) -> bool:
        buf, fam = self._buf, self.family
        i = skip_ws(buf, self._pos)
        rest = buf[i:]
        if not self.parallel:
            self._state = "done"
            return True
        for sep, then in ((fam.close, "close"), ("," if self._array else fam.separator, "object")):
            if sep and rest.startswith(sep):
                self._pos = i + len(sep)
                self._state = "text" if then == "close" else "object"
                if then == "close":
                    self._in_calls = True
                return True
            if sep and sep.startswith(rest) and not self._final:
                return False  # the separator may still be arriving
        if self._array and rest.startswith("]"):
            i += 1
        self._pos = i
        self._in_calls = True
        self._state = "text"
        return True

    def _st_done(self) -> bool:
        self._pos = len(self._buf)
        return False

    def _st_broken(self) -> bool:
        self._pos = len(self._buf)
        return False

    # ------------------------------------------------------------------ helpers

    def _wait_or_fail(self) -> bool:
        return self._fail() if self._final else False

    def _fail(self) -> bool:
        """This region is not a call (or a call broke): unsent, it is content again."""
        self._current = None
        if self._region_sent:
            self._state = "broken"
            return True
        self._started = True  # a bare region does not open again
        self._send_content(self._buf[self._region : self._region_body] or self._buf[self._region])
        self._pos = max(self._region_body, self._region + 1)
        self._state = "text"
        return True

    def _start_call(self, name: str) -> None:
        self._index += 1
        self._region_sent = True
        self._in_calls = True
        self._ws = ""
        self._current = ToolCall(new_call_id(), name, "")
        piece = {"index": self._index, "id": self._current.id, "type": "function"}
        self._out.append({"tool_calls": [{**piece, "function": {"name": name, "arguments": ""}}]})

    def _send_args(self, text: str) -> None:
        if text:
            self._out.append({"tool_calls": [{"index": self._index, "function": {"arguments": text}}]})

    def _complete(self, arguments: str) -> None:
        if self._current is not None:
            self._current.arguments = arguments
            self.calls.append(self._current)
        self._current = None

    def _send_content(self, text: str, force: bool = False) -> None:
        if self._in_calls or not text:
            return
        pending = self._ws + text
        keep = len(pending) if force else len(pending.rstrip())
        if keep:
            self._started = self._started or bool(pending[:keep].strip())
            self.content += pending[:keep]
            self._out.append({"content": pending[:keep]})
        self._ws = pending[keep:]

    def _take(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out


def _partial_suffix(buf: str, pos: int, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``buf[pos:]`` that a marker starts with."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(buf) - pos), best, -1):
            if marker.startswith(buf[len(buf) - n :]):
                best = n
                break
    return best


def parse(family: Family, text: str, *, parallel: bool = True) -> Parsed:
    """The whole-text parse: the stream fed ``text`` at once."""
    stream = CallStream(family, parallel=parallel)
    stream.feed(text)
    stream.finish()
    if not stream.calls:
        return Parsed(content=text)
    return Parsed(content=stream.content or None, calls=stream.calls)
