"""One chat request's tool calling, as the service carries it out: the prompt (messages and
tools through the model's template, or the fallback), the constraint of a required or named
call, and how the reply is read (``ToolOutput``, on the ``Generation``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hfd.backends.base import SamplingParams
from hfd.daemon import structured
from hfd.daemon.schema import utf8_length
from hfd.daemon.tools import plan as plans
from hfd.daemon.tools.output import ToolOutput
from hfd.daemon.tools.render import hf_messages

if TYPE_CHECKING:
    from hfd.daemon.models.loaded import LoadedModel
    from hfd.daemon.schema import ChatCompletionRequest


class ChatTools:
    def __init__(self, req: ChatCompletionRequest, override: str | None = None) -> None:
        self.plan = plans.plan(req, override)
        self.messages = hf_messages(req.messages)
        self._detected: str | None = None
        self._identity: str | None = None

    def prompt_bytes(self) -> int:
        return sum(utf8_length(m["content"]) for m in self.messages) + self.plan.size()

    def template_call(self, lm: LoadedModel) -> Callable[[], list[int]]:
        """The engine call that renders this chat (run it off the event loop)."""
        model: Any = lm.model
        messages, tools, detected = self.plan.render(model, self.messages)
        self._detected = detected
        plans.remember(lm.identity, detected)
        if tools:
            return functools.partial(model.apply_chat_template, messages, tools)
        return functools.partial(model.apply_chat_template, messages)

    def cache_request(self, req: ChatCompletionRequest, identity: str | None) -> ChatCompletionRequest:
        """The request as the response cache may see it: a reply of a model whose parser is not
        known yet (first request since start) is not replayed, as it could not be read."""
        self._identity = identity
        if self.plan.active and req.cache and plans.remembered(identity) is None:
            return req.model_copy(update={"cache": False})
        return req

    async def constrain(self, lm: LoadedModel, params: SamplingParams) -> SamplingParams:
        """``params`` with the required or named call enforced (``hfd.daemon.structured``)."""
        if not self.plan.constrained:
            return params
        return await structured.constrain(lm.model, self.plan.spec(), params)

    def output(self) -> ToolOutput | None:
        detected = self._detected or plans.remembered(self._identity)
        if not self.plan.active or detected is None:
            return None
        return self.plan.output(detected)
