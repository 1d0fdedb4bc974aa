"""A generation engine driven by hand, as the scheduler drives it: every sequence added, then
steps until no work is left."""

from __future__ import annotations

from hfd.backends.base import GenerationModel, SamplingParams, StepOutput


def drive(
    model: GenerationModel, jobs: dict[int, tuple[list[int], SamplingParams]]
) -> dict[int, list[StepOutput]]:
    """Each sequence id's step outputs, in order, for ``jobs`` (id -> prompt ids and params)."""
    outs: dict[int, list[StepOutput]] = {}
    for sid, (prompt, params) in jobs.items():
        model.add(sid, prompt, params)
    while model.has_work():
        for out in model.step():
            outs.setdefault(out.seq_id, []).append(out)
    return outs
