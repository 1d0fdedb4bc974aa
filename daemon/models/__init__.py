"""Models: which exist, which are loaded, on which engine, and for how long.

- ``manager.ModelManager``: the façade the service calls (``acquire``, ``load``, ``unload``,
  ``stats``); it holds one slot per model and delegates to the modules below.
- ``refs``: what a model reference is (a store reference, a local directory), its task, and
  client-facing messages without filesystem paths.
- ``loading``: engine choice (the policy over the detected hardware), loading with fallback,
  the engines remembered as failing, and starting the model's scheduler. The engine loader and
  the hardware detector are injectable callables, so tests can pass fakes.
- ``residency``: keep-alive, memory admission and least-recently-used eviction.
- ``loaded``: ``LoadedModel``, the record of one loaded model (one row of ``hfd ps``).
- ``memory`` (estimates and budgets), ``breaker`` (circuit breakers), ``threads`` (engine
  thread budget), ``engine_memory`` (engines known to crash on a model here), ``engine_info``
  (precision, weight format, threads and KV cache for ``hfd ps``).

This ``__init__`` imports nothing, so ``hfd.daemon.models.threads`` (used by ``hfd doctor``)
stays light.
"""
