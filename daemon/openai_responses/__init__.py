"""OpenAI's Responses API (``POST /v1/responses`` and the stored responses), translated to and
from the chat path: a request becomes a ``ChatCompletionRequest`` (``translate``), the chat
completion's body or chunks become a response or its events (``output``, ``events``); finished
responses are kept as JSON files in the state directory (``store``). No model logic here.
"""
