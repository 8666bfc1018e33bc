"""Chat streams that survive a replica (``resume_streams``): the continuation of a stream that
failed after its first content, asked of another endpoint as the prompt plus the text already
sent, as an assistant message to continue (vLLM's ``continue_final_message``, with
``add_generation_prompt`` off). The caller's stream goes on with no token lost or repeated: the
continuation's role preamble is dropped, its chunks keep the first stream's id, and its final
usage counts what every attempt generated: the continuation's prompt (which holds the text
already sent) and completion, plus the abandoned attempts' tokens, estimated and marked so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway_core.providers.base import Call, Provider
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb


class ChatResumer:
    """The ``Resumer`` of one chat stream (see the module's docstring)."""

    __slots__ = ("finished", "first_id", "pieces", "plain", "request", "resumed")

    def __init__(self, request: pb.ChatRequest) -> None:
        self.request = request
        self.pieces: list[str] = []
        self.first_id = ""
        self.plain = True  # text of choice 0 only: what a continuation can carry on
        self.finished = False
        self.resumed = 0  # tokens the abandoned attempts generated, estimated

    def saw(self, chunk: pb.ChatChunk) -> None:
        if not self.first_id:
            self.first_id = chunk.id
        elif self.resumed and chunk.id != self.first_id:
            chunk.id = self.first_id
        for c in chunk.choices:
            d = c.delta
            if c.index or d.tool_calls or d.HasField("refusal") or c.HasField("extra"):
                self.plain = False
            if d.content:
                self.pieces.append(d.content)
            if c.finish_reason:
                self.finished = True
        if self.resumed and chunk.HasField("usage"):
            u = chunk.usage
            u.completion_tokens += self.resumed
            u.total_tokens = u.prompt_tokens + u.completion_tokens
            u.estimated = True

    def can_resume(self) -> bool:
        return self.plain and not self.finished and bool(self.pieces)

    def continue_on(self, provider: Provider, call: Call) -> AsyncIterator[pb.ChatChunk]:
        text = "".join(self.pieces)
        self.pieces = [text]
        self.resumed = estimate_tokens(text)
        req = pb.ChatRequest()
        req.CopyFrom(self.request)
        req.messages.add(role="assistant", content=text)
        req.extra.update({"continue_final_message": True, "add_generation_prompt": False})
        return provider.chat_stream(req, call)

    def continuation(self, held: list[pb.ChatChunk]) -> list[pb.ChatChunk]:
        out = []
        for chunk in held:
            for c in chunk.choices:
                c.delta.role = ""
            if not chunk.choices and not chunk.HasField("usage"):
                continue
            if all(not c.delta.content and not c.finish_reason and not c.delta.tool_calls
                   for c in chunk.choices) and not chunk.HasField("usage"):
                continue  # the continuation's own preamble
            chunk.id = self.first_id
            out.append(chunk)
        return out
