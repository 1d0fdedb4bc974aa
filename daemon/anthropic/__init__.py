"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``),
translated to and from the chat path, so the official ``anthropic`` SDK works with its
``base_url`` pointed at hfd: ``schema`` (the request), ``translate`` (to a chat completion
request), ``output`` (a chat completion's body or chunks as a message or its events, and errors
in Anthropic's shape). No model logic here.
"""
