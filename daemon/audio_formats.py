"""A transcript in each of OpenAI's ``response_format`` values: ``json`` (``{"text"}``),
``text``, ``srt``, ``vtt`` and ``verbose_json`` (task, language, duration, text, segments, and
``words`` when ``timestamp_granularities`` asks for them).

Without segment times from the engine (timestamps not asked for, or none found), the whole text
is one segment spanning the audio.
"""

from __future__ import annotations

from typing import Any, Literal

from hfd.backends.whisper_common import Segment, Transcript, Word

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
TIMED: frozenset[str] = frozenset({"srt", "vtt", "verbose_json"})


def segments(t: Transcript) -> tuple[Segment, ...]:
    if t.segments:
        return t.segments
    return (Segment(start=0.0, end=round(t.duration, 3), text=t.text),)


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments(t), start=1)
    ]
    return "\n".join(blocks)


def vtt(t: Transcript) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments(t)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def verbose(t: Transcript, task: str) -> dict[str, Any]:
    return {
        "task": task,
        "language": t.language or "unknown",
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {
                "id": i,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": list(s.tokens),
                "temperature": 0.0,
                # Not computed by the engines; OpenAI's fields are kept so clients that read
                # them find numbers.
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, s in enumerate(segments(t))
        ],
        **({} if t.words is None else {"words": [_word(w) for w in t.words]}),
    }


def _word(w: Word) -> dict[str, Any]:
    # OpenAI's words carry no surrounding spaces (the engines' keep the tokenizer's leading one).
    return {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}


def render(t: Transcript, fmt: str, task: str) -> dict[str, Any] | str:
    """The reply body: a dict for the JSON formats, text for text, srt and vtt."""
    if fmt == "text":
        return t.text
    if fmt == "srt":
        return srt(t)
    if fmt == "vtt":
        return vtt(t)
    if fmt == "verbose_json":
        return verbose(t, task)
    return {"text": t.text}
