"""Vision chat generation over several requests at once: one ``generate`` call, one prefill and
one decode loop, for prompts with different images and lengths.

The prompts are left-padded to one length (``attention_mask`` 0 on the padding: transformers
derives the positions from it, Qwen2-VL its 3-D rotary positions too), and their image tensors
joined as the family's processor joins a batch: flattened images (LLaVA, Gemma 3) and patches
(Qwen2-VL, with ``image_grid_thw``) one after another; Idefics3 / SmolVLM's per-prompt image
stacks padded with all-zero images, which the model drops. Each row keeps its own
``max_tokens``, ``min_tokens``, stop event and token stream: the streamer hands each row its
token, a stopping criterion ends a row that is done (end of sequence, its length, its stop
event) while the others go on, and end-of-sequence is masked per row until its ``min_tokens``.

Which requests may share a call (``batch_key``): greedy ones, and sampled ones without a seed
with the same temperature, ``top_p`` and minimum length. A seeded request runs alone, so its
seed gives the same reply whatever else is being served. A batch of one is exactly
transformers' ``generate`` on the request's own inputs.

How many share one call (``groups``): at most ``max_running`` rows, whose padded prompts hold
at most ``max_batched_tokens`` tokens (the prefill the memory estimate allows for) and whose
padded prompts plus new tokens fit one context length (the KV cache the estimate reserves: one
sequence at full context). Rows beyond that run in the next call. One row always runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hfd.backends.base import FinishReason, SamplingParams

# Per-token tensors, left-padded with these values (the pad token for input_ids).
_PER_TOKEN = {"attention_mask": 0, "token_type_ids": 0, "mm_token_type_ids": 0}
# Families whose image tensors are stacked per prompt (batch, images, ...), not flattened.
_STACKED = ("idefics3", "smolvlm")


@dataclass(frozen=True)
class VisionPrompt:
    """One request's model inputs: the prompt ids and the image tensors, ready for ``generate``."""

    ids: list[int]
    tensors: dict[str, Any]  # input_ids, attention_mask, pixel_values, ...

    @property
    def tokens(self) -> int:
        return len(self.ids)


@dataclass(eq=False)
class VisionRow:
    """One request in a batch: its prompt and sampling, where its tokens go, what stops it, and
    who hears that it ended (``finished``, as soon as it does: the batch may go on without it)."""

    prompt: VisionPrompt
    params: SamplingParams
    emit: Callable[[list[int]], None]
    stop: threading.Event
    finished: Callable[[FinishReason], None] | None = None
    produced: int = field(default=0, init=False)
    done: bool = field(default=False, init=False)

    @property
    def min_tokens(self) -> int:
        return min_new_tokens(self.params)

    def finish(self) -> FinishReason:
        if self.stop.is_set():
            return "cancelled"
        return "length" if self.produced >= self.params.max_tokens else "stop"

    def end(self) -> None:
        if not self.done:
            self.done = True
            if self.finished is not None:
                self.finished(self.finish())


def min_new_tokens(params: SamplingParams) -> int:
    """Tokens before end-of-sequence may end a reply: with ``ignore_eos`` it is masked until
    ``max_tokens``, so the length is fixed."""
    return params.max_tokens if params.ignore_eos else params.min_tokens


def batch_key(params: SamplingParams) -> Hashable | None:
    """Requests with equal keys may share one ``generate`` call; None: this one runs alone."""
    if params.greedy:
        return ("greedy",)
    if params.seed is not None:
        return None
    return ("sample", params.temperature, params.top_p, min_new_tokens(params))


def groups(
    rows: Sequence[VisionRow], *, max_rows: int, max_prefill: int, context: int
) -> list[list[VisionRow]]:
    """``rows`` in arrival order, cut into the batches one call may take."""
    out: list[list[VisionRow]] = []
    prompt = new = 0
    for row in rows:
        p, n = max(prompt, row.prompt.tokens), max(new, row.params.max_tokens)
        size = len(out[-1]) + 1 if out else 0
        if out and size <= max_rows and size * p <= max_prefill and size * (p + n) <= context:
            out[-1].append(row)
            prompt, new = p, n
        else:
            out.append([row])
            prompt, new = row.prompt.tokens, row.params.max_tokens
    return out


def collate(prompts: Sequence[VisionPrompt], model_type: str, pad_id: int) -> dict[str, Any]:
    """The prompts' tensors as one left-padded batch (one prompt: its own tensors)."""
    import torch

    if len(prompts) == 1:
        return dict(prompts[0].tensors)
    length = max(p.tokens for p in prompts)
    out: dict[str, Any] = {}
    for key in {k for p in prompts for k in p.tensors}:
        present = [p.tensors[key] for p in prompts if key in p.tensors]
        if key == "input_ids" or key in _PER_TOKEN:
            fill = pad_id if key == "input_ids" else _PER_TOKEN[key]
            out[key] = torch.cat([torch.nn.functional.pad(p.tensors[key], (length - p.tokens, 0), value=fill)
                                  for p in prompts])  # fmt: skip
        elif model_type in _STACKED:  # (1, images, ...): padded to the most images, the largest size
            shape = [max(t.shape[d] for t in present) for d in range(1, present[0].dim())]
            out[key] = torch.cat([_pad_to(p.tensors.get(key), shape, present[0].dtype) for p in prompts])
        else:
            out[key] = torch.cat(present)
    return out


def _pad_to(tensor: Any, shape: list[int], dtype: Any) -> Any:
    """``tensor`` (1, ...) zero-padded at the end of each dimension to (1, *shape); None: zeros."""
    import torch

    if tensor is None:
        return torch.zeros((1, *shape), dtype=dtype)
    widths = [
        w
        for size, want in zip(reversed(tensor.shape[1:]), reversed(shape), strict=True)
        for w in (0, want - size)
    ]
    return torch.nn.functional.pad(tensor, widths)


def generate(model: Any, rows: Sequence[VisionRow], inputs: dict[str, Any], eos: Sequence[int],
             pad_id: int) -> list[FinishReason]:  # fmt: skip
    """One ``generate`` call for ``rows`` (compatible by ``batch_key``) over their collated
    ``inputs`` (on the model's device); each row's finish reason."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    ends = frozenset(eos)
    first = rows[0].params
    floor = min(r.min_tokens for r in rows)  # transformers' own processor; rows above it: ours

    class _Stream(BaseStreamer):  # type: ignore[misc]
        prompt = True

        def put(self, value: Any) -> None:
            if self.prompt:  # generate hands the prompt over first
                self.prompt = False
                return
            for row, token in zip(rows, value.reshape(-1).tolist(), strict=True):
                if row.done:
                    continue  # a finished row's padding
                row.produced += 1
                row.emit([int(token)])
                if int(token) in ends or row.produced >= row.params.max_tokens or row.stop.is_set():
                    row.end()

        def end(self) -> None:
            pass

    class _Done(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = [row.done or row.stop.is_set() for row in rows]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    class _MinTokens(LogitsProcessor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for i, row in enumerate(rows):
                if row.produced < row.min_tokens:
                    scores[i, list(ends)] = -float("inf")
            return scores

    kwargs: dict[str, Any] = {
        "max_new_tokens": max(r.params.max_tokens for r in rows),
        "min_new_tokens": floor,
        "do_sample": not first.greedy,
        "eos_token_id": sorted(ends) or None,
        "pad_token_id": pad_id,
        "streamer": _Stream(),
        "stopping_criteria": StoppingCriteriaList([_Done()]),
    }
    if ends and any(r.min_tokens > floor for r in rows):
        kwargs["logits_processor"] = LogitsProcessorList([_MinTokens()])
    if not first.greedy:
        kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        if first.seed is not None:  # a seeded request is always alone (batch_key)
            torch.manual_seed(first.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        model.generate(**inputs, **kwargs)
    for row in rows:  # those its stop event ended between two tokens
        row.end()
    return [row.finish() for row in rows]
