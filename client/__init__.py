"""hfd.client: talk to the hfd daemon over its ZeroMQ IPC socket.

    from hfd.client import Client

    with Client() as client:
        reply = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "Hi"}])
        print(reply.choices[0].message.content)
        vectors = client.embeddings.create(model="minilm", input=["a", "b"]).embeddings  # (2, d) float32
        client.pull("org/name", progress=lambda p: print(p.status, p.completed, p.total))

    # A daemon's TCP endpoint (ipc_tcp), with CURVE keys as `hfd keys curve` writes them:
    Client("tcp://10.0.0.5:5555", curve_server_key="server.key", curve_secret_key="me.key_secret")

The objects mirror the OpenAI SDK's. Errors are the classes of ``hfd.client.errors`` (the
daemon's own), so ``except ModelNotFound`` works as it does inside the daemon. This package
imports only pyzmq, msgpack, numpy (optional) and the standard library.
"""

from hfd.client.aio import AsyncClient, AsyncStream
from hfd.client.chat_types import ChatCompletion, ChatCompletionChunk, Completion
from hfd.client.errors import (
    Cancelled,
    ContextLengthExceeded,
    DaemonUnavailable,
    Forbidden,
    HfdError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    Timeout,
    Unauthorized,
    ValidationFailed,
)
from hfd.client.paths import default_endpoint
from hfd.client.sync import Client, Stream
from hfd.client.types import (
    Embedding,
    EmbeddingResponse,
    Model,
    ModelList,
    PulledModel,
    PullProgress,
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
    "Forbidden",
    "HfdError",
    "InvalidRequest",
    "Model",
    "ModelList",
    "ModelNotFound",
    "ModelUnavailable",
    "Overloaded",
    "PullProgress",
    "PulledModel",
    "RunningModel",
    "Stream",
    "Timeout",
    "Unauthorized",
    "Usage",
    "ValidationFailed",
    "default_endpoint",
]
