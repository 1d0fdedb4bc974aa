"""OpenVINO GenAI's ``VLMPipeline``, in a child process of its own or in-process.

A native crash of OpenVINO takes its whole process down (``/work/shared/ENVIRONMENT.md``: GenAI's
pipelines die with SIGFPE at one thread on some CPUs), so by default the pipeline runs in a child
process and a crash there fails one request and the model, never the daemon. The model option
``pipeline_process = false`` keeps it in the daemon's process (``LocalVision``).

The parent's handle is the generation engine process's (``openvino_process.PipelineProcess``:
start, ``init``, death, ``close``) and so is the framing (``openvino_pipe``: a little-endian u32
length and a msgpack map, over two pipes handed over by file descriptor). To the child: ``init``
(the child builds the pipeline and runs a one-token warm-up, so a crash on this CPU happens at
load; it answers ``{"ok": true}`` or ``{"error": ...}``), ``generate`` (the prompt's text, its
images as raw RGB bytes with their shapes, and a plain dict of ``GenerationConfig`` fields),
``cancel`` (the running generation stops after its current token) and ``close``. From the child,
while it generates: ``{"tokens": [...]}`` as the streamer gets them, then ``{"done": true}`` or
``{"done": true, "error": ...}``. One generation at a time: the media scheduler serves a model's
requests one after another. The child exits when its request pipe closes.

Run as ``python -m hfd.backends.vlm_openvino_process <request fd> <reply fd>``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np

from hfd.backends.openvino_pipe import Channel, readable
from hfd.backends.openvino_process import PipelineProcess
from hfd.client.errors import InvalidRequest

log = logging.getLogger(__name__)

_POLL_S: Final = 0.05  # how often a waiting parent looks at its stop event

Emit = Callable[[list[int]], None]
Stopped = Callable[[], bool]


def _config(fields: dict[str, Any]) -> Any:
    import openvino_genai

    config = openvino_genai.GenerationConfig()
    for name, value in fields.items():
        setattr(config, name, set(value) if name == "stop_token_ids" else value)
    return config


class LocalVision:
    """The pipeline in this process: ``generate`` blocks its thread until the reply is done."""

    alive = True

    def __init__(self, init: dict[str, Any]) -> None:
        import openvino_genai

        self.pipeline = openvino_genai.VLMPipeline(str(init["folder"]), str(init["device"]),
                                                   **dict(init["properties"]))  # fmt: skip
        # GenAI's tokenizer adds the BOS token itself where the model's tokenizer adds special
        # tokens; the chat template's text has it already (hfd tokenizes it without them).
        tokenizer = self.pipeline.get_tokenizer()
        with_special = tokenizer.encode("a").input_ids.data.tolist()[0]
        plain = tokenizer.encode("a", add_special_tokens=False).input_ids.data.tolist()[0]
        self.bos = str(init.get("bos") or "") if len(with_special) > len(plain) else ""
        self.generate("warm-up", [], {"max_new_tokens": 1, "apply_chat_template": False}, lambda ids: None,
                      lambda: False)  # fmt: skip

    def generate(self, text: str, images: Sequence[np.ndarray], config: dict[str, Any], emit: Emit,
                 stopped: Stopped) -> None:  # fmt: skip
        """Generate for ``text`` over ``images`` (HxWx3 uint8), handing each new token to
        ``emit``; ``stopped`` ends it after the current token."""
        import openvino as ov
        import openvino_genai

        class _Streamer(openvino_genai.StreamerBase):  # type: ignore[misc]
            def write(self, token: Any) -> Any:
                emit([int(token)] if isinstance(token, int) else [int(t) for t in token])
                return (
                    openvino_genai.StreamingStatus.STOP
                    if stopped()
                    else openvino_genai.StreamingStatus.RUNNING
                )

            def end(self) -> None:
                pass

        tensors = [ov.Tensor(np.ascontiguousarray(image)[None]) for image in images]
        if self.bos:
            text = text.removeprefix(self.bos)
        self.pipeline.generate(text, images=tensors, generation_config=_config(config), streamer=_Streamer())

    def close(self) -> None:
        self.pipeline = None


class VisionProcess(PipelineProcess):
    """A ``VLMPipeline`` in a child process, one ``generate`` at a time: the generation engine
    process's handle (start, ``init`` and its crash report, ``alive``, death, ``close``) running
    this module's child."""

    module = __name__

    def __init__(self, init: dict[str, Any]) -> None:
        super().__init__(init)
        self._turn = threading.Lock()

    def generate(self, text: str, images: Sequence[np.ndarray], config: dict[str, Any], emit: Emit,
                 stopped: Stopped) -> None:  # fmt: skip
        """As ``LocalVision.generate``; waits without the GIL between the child's messages, and
        looks at ``stopped`` every ``_POLL_S`` seconds."""
        with self._turn:
            pictures = [
                {"shape": list(i.shape), "data": np.ascontiguousarray(i, np.uint8).tobytes()} for i in images
            ]
            self._send({"op": "generate", "text": text, "images": pictures, "config": config})
            cancelled = False
            while True:
                if not cancelled and stopped():
                    cancelled = True
                    self._send({"op": "cancel"})
                if not self._buffer and not readable(self._rx, _POLL_S):
                    continue
                for message in self._read():
                    if "tokens" in message:
                        emit([int(t) for t in message["tokens"]])
                    elif "done" in message:
                        if message.get("error"):
                            raise InvalidRequest(f"OpenVINO GenAI refused the request: {message['error']}",
                                                 param="messages")  # fmt: skip
                        return


# -- the child's side ---------------------------------------------------------------------------


def _cancelled(channel: Channel) -> bool:
    """Whether the parent asked to stop the running generation (reads what it sent)."""
    channel.receive(0)
    found = any(m.get("op") in ("cancel", "close") for m in channel.inbox)
    channel.inbox = [m for m in channel.inbox if m.get("op") != "cancel"]
    return found or channel.closed


def _serve(channel: Channel) -> int:
    runner: LocalVision | None = None
    while True:
        while not channel.inbox and not channel.closed:
            channel.receive(None)  # a message larger than one read (an image) takes several
        message = channel.inbox.pop(0) if channel.inbox else {"op": "close"}
        match message.get("op"):
            case "close":
                return 0
            case "init":
                runner = _start(channel, message)
            case "generate" if runner is not None:
                _generate(channel, runner, message)


def _start(channel: Channel, init: dict[str, Any]) -> LocalVision | None:
    try:
        runner = LocalVision(init)
    except Exception as exc:
        channel.send({"error": f"OpenVINO GenAI cannot load the vision model: {exc}"})
        return None
    channel.send({"ok": True})
    return runner


def _generate(channel: Channel, runner: LocalVision, message: dict[str, Any]) -> None:
    images = [np.frombuffer(i["data"], np.uint8).reshape(i["shape"]) for i in message["images"]]
    try:
        runner.generate(str(message["text"]), images, dict(message["config"]),
                        lambda ids: channel.send({"tokens": ids}), lambda: _cancelled(channel))  # fmt: skip
    except Exception as exc:
        channel.send({"done": True, "error": str(exc)})
        return
    channel.send({"done": True})


if __name__ == "__main__":
    from hfd.backends import openvino_process

    sys.exit(openvino_process.main(sys.argv[1:], _serve))
