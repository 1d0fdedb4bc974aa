"""hfd.client: talk to the hfd daemon over its ZeroMQ IPC socket.

    from hfd.client import Client

    with Client() as client:
        reply = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "Hi"}])
        print(reply.choices[0].message.content)
        vectors = client.embeddings.create(model="minilm", input=["a", "b"]).embeddings  # (2, d) float32

The objects mirror the OpenAI SDK's. Errors are the classes of ``hfd.client.errors`` (the
daemon's own), so ``except ModelNotFound`` works as it does inside the daemon. This package
imports only pyzmq, msgpack, numpy (optional) and the standard library.
"""

from hfd.client.aio import AsyncClient, AsyncStream
from hfd.client.errors import (
    Cancelled,
    ContextLengthExceeded,
    DaemonUnavailable,
    HfdError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    Timeout,
    ValidationFailed,
)
from hfd.client.paths import default_endpoint
from hfd.client.sync import Client, Stream
from hfd.client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    Embedding,
    EmbeddingResponse,
    Model,
    ModelList,
    RunningModel,
    Usage,
)

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "Cancelled",
    "ChatCompletion",
    "ChatCompletionChunk",
    "Client",
    "Completion",
    "ContextLengthExceeded",
    "DaemonUnavailable",
    "Embedding",
    "EmbeddingResponse",
    "HfdError",
    "InvalidRequest",
    "Model",
    "ModelList",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "RunningModel",
    "Stream",
    "Timeout",
    "Usage",
    "ValidationFailed",
    "default_endpoint",
]
