"""Task families as plug-ins: what a model is for (generate, embed, rerank, classify, ...).

- ``registry``: one record per task family, registered by name (as ``hfd.backends.registry``
  does for engines): which scheduler serves it, which engines can run it, how it is detected;
- ``detect``: what a snapshot's files say about its task (config.json, the README's front
  matter, sentence-transformers modules, processor files), cheap enough for ``/v1/models``;
- ``text_heads``: rerank, classification and token classification over an encoder head
  (pre- and post-processing around the encoder scheduler).

Adding a task: its module and a record in ``registry.RECORDS``.
"""
