"""Ollama's native API on the HTTP door (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/tags``, ``/api/show``, ``/api/delete``, ``/api/copy``, and Ollama's shapes on the shared
``/api/ps``, ``/api/pull`` and ``/api/version``).

The routes translate Ollama requests into the service's own request types and its results back
into Ollama's bodies; they hold no model logic. ``names``: how Ollama's ``name:tag`` maps to
hfd's references, and the alias table ``/api/copy`` writes; ``options``: Ollama's ``options``
and ``format`` as hfd sampling fields; ``describe``: what a model directory is (family, size,
parameter count) for ``/api/tags``, ``/api/show`` and ``/api/ps``; ``shapes``: the bodies;
``ndjson``: the stream; ``routes``: the endpoints.
"""
