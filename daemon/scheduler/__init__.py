"""Per-model schedulers that batch work between the transports and an engine.

- ``generation.GenerationScheduler``: continuous batching over a step-wise ``GenerationModel``.
- ``encoder.EncoderScheduler``: dynamic batching over an ``EncoderModel``.
- ``base.Scheduler``: the typed protocol both implement, and their stats dataclasses.

Both own one worker thread for engine calls (engines release the GIL), bound their queue
(``Overloaded`` when full) and are used by the service through:

    sched.start()                                   # starts the worker thread
    stream = sched.submit(prompt_ids, params)       # GenerationScheduler; raises Overloaded
    async for chunk in stream: ...                  # TokenChunk(text, token_ids, finish_reason)
    await stream.aclose()                           # cancels when not finished
    result = await sched.embed(texts)               # EncoderScheduler -> EmbedResult
    sched.stats() -> GenerationStats | EncoderStats # dataclasses; .to_dict() for the wire
    sched.active -> int                             # for `hfd ps` and the manager
    await sched.aclose()                            # drain or cancel, then stop the thread
"""
