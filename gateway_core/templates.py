"""Custom chat templates (seed 000): a Jinja template over ``messages`` only, rendered in the core
into a completion prompt, inside a sandbox with limits on size and time.

The template comes from the caller, so it is untrusted code:
- ``ImmutableSandboxedEnvironment``: no attribute tricks, no mutation of the messages;
- every operation that can build a large value is checked *before* it allocates (``*``, ``+``,
  ``%``, ``~``, string methods, filters, macro output), against ``limits.max_template_bytes``;
- rendering runs in a worker thread under a trace function that stops it when
  ``limits.template_timeout_seconds`` pass (an endless or huge loop ends as a 400, the event loop is
  never blocked);
- every failure is an ``InvalidRequest`` that says what is wrong (syntax error with its line, an
  undefined name, a forbidden operation, too big, too slow).
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from gateway_core.errors import InvalidRequest
from inference_gateway.v1 import inference_pb2 as pb

_DIGITS = re.compile(r"\d+")
_CACHE_SIZE = 64
_WORKERS = 4
_TEMPLATE_FILE = "<template>"
_SCOPE_KEYS = frozenset({"_loop_vars", "_block_vars"})


class _TooSlow(BaseException):
    """Raised inside the render thread when the deadline passes (not an Exception: nothing in the
    template machinery catches it)."""


class _LimitedNamespace(Namespace):
    """``namespace()`` whose attributes are bounded like everything else."""

    limit = 0

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(value, type(self).limit, "a namespace attribute")
        super().__setitem__(name, value)


def _check_size(value: Any, limit: int, what: str) -> Any:
    if isinstance(value, str | list | tuple | dict | bytes) and len(value) > limit:
        raise SecurityError(f"{what} would be {len(value)} long; the limit is {limit}")
    return value


def _raise_exception(message: str) -> None:
    """Templates written for Hugging Face tokenizers call this to reject input."""
    raise jinja2.TemplateError(message)


class _Env(ImmutableSandboxedEnvironment):
    """The sandbox with size checks before every operation that can grow a value."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limit: int) -> None:
        # The settings of Hugging Face's apply_chat_template, which such templates are written for.
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                         lstrip_blocks=True)
        self.limit = limit
        self.globals["namespace"] = type("namespace", (_LimitedNamespace,), {"limit": limit})
        self.globals["raise_exception"] = _raise_exception
        self.globals.pop("lipsum", None)  # generates text of any length
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}

    def concat(self, parts: Iterable[Any]) -> str:
        return self.join(parts, "a macro's output")

    def join(self, parts: Iterable[Any], what: str = "a string") -> str:
        strs = [str(p) for p in parts]
        total = sum(len(s) for s in strs)
        if total > self.limit:
            raise SecurityError(f"{what} would be {total} characters; the limit is {self.limit}")
        return "".join(strs)

    def _check_args(self, args: Iterable[Any], what: str) -> None:
        for a in args:
            if isinstance(a, int) and not isinstance(a, bool) and abs(a) > self.limit:
                raise SecurityError(f"{what} got the number {a}; numbers above {self.limit}"
                                    " are not allowed here")
            if isinstance(a, str):
                self._check_widths(a)

    def _check_widths(self, fmt: str) -> None:
        if "%" in fmt or "{" in fmt:
            for digits in _DIGITS.findall(fmt):
                if len(digits) > 9 or int(digits) > self.limit:
                    raise SecurityError(f"a format width of {digits[:12]} is too large")

    def _guard_filter(self, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        env = self
        skip = 1 if hasattr(f, "jinja_pass_arg") else 0  # context / eval context / environment

        def guarded(*args: Any, **kwargs: Any) -> Any:
            what = f"the filter '{name}'"
            env._check_args(args[skip + 1:], what)
            env._check_args(kwargs.values(), what)
            if name == "join" and len(args) > skip and isinstance(args[skip], list | tuple):
                sep = kwargs.get("d", args[skip + 1] if len(args) > skip + 1 else "")
                env._check_join(args[skip], str(sep))
            return _check_size(f(*args, **kwargs), env.limit, f"the output of {what}")

        if skip:
            guarded.jinja_pass_arg = f.jinja_pass_arg  # type: ignore[attr-defined]
        return guarded

    def _check_join(self, items: Iterable[Any], sep: str) -> None:
        items = list(items)
        total = sum(len(str(i)) for i in items) + len(sep) * max(0, len(items) - 1)
        if total > self.limit:
            raise SecurityError(f"a join would be {total} characters; the limit is {self.limit}")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) \
                        and len(seq) * n > self.limit:
                    raise SecurityError(f"a repetition would be {len(seq) * n} long; the limit"
                                        f" is {self.limit}")
        elif operator == "**" and isinstance(right, int) and abs(right) > 128:
            raise SecurityError("exponents above 128 are not allowed")
        elif operator == "+" and isinstance(left, str | list | tuple) \
                and isinstance(right, str | list | tuple):
            if len(left) + len(right) > self.limit:
                raise SecurityError(f"a concatenation would be {len(left) + len(right)} long;"
                                    f" the limit is {self.limit}")
        elif operator == "%" and isinstance(left, str):
            self._check_widths(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self._check_args(args, "a call")
        __self._check_args((v for k, v in kwargs.items() if k not in _SCOPE_KEYS), "a call")
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name == "join" and args:
                __self._check_join(args[0], owner)
            elif name == "replace" and len(args) >= 2 and isinstance(args[1], str):
                old, new = str(args[0]), args[1]
                hits = len(owner) + 1 if not old else owner.count(old)
                if len(owner) + hits * max(0, len(new) - len(old)) > __self.limit:
                    raise SecurityError("a replace would exceed the size limit")
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result, __self.limit, "a call's result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str):
            self._check_widths(owner)
        return super().wrap_str_format(value)


class TemplateRenderer:
    """Compiles (cached) and renders chat templates with the configured limits."""

    def __init__(self, max_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.env = _Env(max_bytes)
        self._cache: OrderedDict[str, jinja2.Template] = OrderedDict()
        self._lock = threading.Lock()
        # Its own few threads: slow templates queue here (their deadline running) instead of
        # filling the loop's default executor.
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="chat-template")

    def _compile(self, source: str) -> jinja2.Template:
        with self._lock:
            cached = self._cache.get(source)
            if cached is not None:
                self._cache.move_to_end(source)
                return cached
        try:
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidRequest(
                f"'chat_template' is not valid Jinja: {exc.message} (line {exc.lineno})") from None
        # ``a ~ b`` joins with a module-level helper: check its size first, like everything else.
        module_globals = template.root_render_func.__globals__
        module_globals["str_join"] = self.env.join
        module_globals["markup_join"] = self.env.join
        with self._lock:
            self._cache[source] = template
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return template

    def _render_sync(self, template: jinja2.Template, messages: list[dict[str, Any]],
                     deadline: float) -> str:
        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if time.monotonic() > deadline:
                raise _TooSlow
            if event == "line":
                for value in frame.f_locals.values():
                    if isinstance(value, str) and len(value) > self.max_bytes:
                        raise SecurityError(f"a value of {len(value)} characters is over the"
                                            f" limit of {self.max_bytes}")
            return local

        def tracer(frame: FrameType, event: str, arg: Any) -> Any:
            if time.monotonic() > deadline:
                raise _TooSlow
            return local if frame.f_code.co_filename == _TEMPLATE_FILE else None

        out: list[str] = []
        size = 0
        previous = sys.gettrace()
        sys.settrace(tracer)
        try:
            for piece in template.generate(messages=messages):
                size += len(piece)
                if size > self.max_bytes:
                    raise SecurityError(f"the rendered template is over the limit of"
                                        f" {self.max_bytes} characters")
                out.append(piece)
        finally:
            sys.settrace(previous)
        return "".join(out)

    async def render(self, source: str, messages: list[dict[str, Any]]) -> str:
        """The prompt for ``messages``; InvalidRequest saying what is wrong otherwise."""
        if len(source) > self.max_bytes:
            raise InvalidRequest(f"'chat_template' is {len(source)} characters; the limit is"
                                 f" {self.max_bytes}")
        template = self._compile(source)
        deadline = time.monotonic() + self.timeout
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._render_sync, template, messages, deadline)
        except _TooSlow:
            raise InvalidRequest(f"'chat_template' took longer than {self.timeout:g} s to render"
                                 ) from None
        except SecurityError as exc:
            raise InvalidRequest(f"'chat_template' is not allowed to do that: {exc}") from None
        except jinja2.UndefinedError as exc:
            hint = "; the template gets only 'messages'" if "is undefined" in str(exc) else ""
            raise InvalidRequest(f"'chat_template' failed: {exc.message}{hint}") from None
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"'chat_template' failed: {exc.message}") from None
        except (RecursionError, MemoryError):
            raise InvalidRequest("'chat_template' recursed or grew too deep to render") from None
        except Exception as exc:  # any error raised by template code is the template's
            raise InvalidRequest(
                f"'chat_template' failed: {exc.__class__.__name__}: {str(exc)[:200]}") from None


def messages_for_template(messages: Iterable[pb.ChatMessage]) -> list[dict[str, Any]]:
    """ChatMessages as the plain dicts a chat template sees (``role``, ``content``, ``name``)."""
    out = []
    for m in messages:
        item: dict[str, Any] = {
            "role": m.role,
            "content": m.content if not m.parts else "".join(p.text for p in m.parts
                                                              if p.type == "text"),
        }
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def completion_request(req: pb.ChatRequest, prompt: str) -> pb.CompletionRequest:
    out = pb.CompletionRequest(model=req.model, prompt=prompt, include_usage=req.include_usage,
                               end_user=req.end_user)
    out.params.CopyFrom(req.params)
    if req.HasField("extra"):
        out.extra.CopyFrom(req.extra)
    return out


def chat_response(resp: pb.CompletionResponse) -> pb.ChatResponse:
    return pb.ChatResponse(
        id=resp.id, created=resp.created, model=resp.model,
        system_fingerprint=resp.system_fingerprint, usage=resp.usage,
        choices=[pb.ChatChoice(index=c.index, finish_reason=c.finish_reason,
                               message=pb.ChatMessage(role="assistant", content=c.text))
                 for c in resp.choices],
    )


def chat_chunk(chunk: pb.CompletionChunk, first: bool) -> pb.ChatChunk:
    out = pb.ChatChunk(id=chunk.id, created=chunk.created, model=chunk.model,
                       system_fingerprint=chunk.system_fingerprint)
    for c in chunk.choices:
        out.choices.add(index=c.index, finish_reason=c.finish_reason,
                        delta=pb.ChatDelta(role="assistant" if first else "", content=c.text))
    if chunk.HasField("usage"):
        out.usage.CopyFrom(chunk.usage)
    return out


