"""A local stub LLM: deterministic, clearly labelled answers, no network.

Speaks OpenAI's APIs and Anthropic's Messages API. Used by ``agentrun dev --stub-llm`` (an offline
demo) and by tests, which point a real PraisonAI run at it: ``OPENAI_BASE_URL=<base_url>``,
``OPENAI_API_KEY=<anything>``, ``MODEL_NAME=openai/agentrun-stub``; or, through litellm's
Anthropic provider, ``ANTHROPIC_API_BASE=<root_url>``, ``ANTHROPIC_API_KEY=<anything>``,
``MODEL_NAME=anthropic/<any name>``; or, through its Ollama provider, ``OLLAMA_API_BASE=<root_url>``
and no key, ``MODEL_NAME=ollama/<any name>`` (or ``ollama_chat/``).

Endpoints:

- ``POST /v1/chat/completions``: streamed (SSE chunks then ``data: [DONE]``) and not;
  ``response_format: {"type": "json_object"}`` (or ``json_schema``) gets a valid JSON object.
- ``POST /v1/responses``: the Responses API that PraisonAI uses for gpt-4o-style model names,
  streamed (typed SSE events ending with ``response.completed``) and not.
- ``POST /v1/messages``: Anthropic's Messages API, streamed (``message_start`` ...
  ``message_stop``) and not; errors in Anthropic's shape.
- ``POST /api/chat``, ``POST /api/generate``, ``POST /api/show``: Ollama's, streamed (one JSON
  object per line, the last with ``done: true``) and not.
- ``GET /v1/models``.

Control endpoints (for tests in other processes):

- ``POST /_stub/configure`` with ``{"delay_seconds": float, "fail_status": int | null,
  "answer": str | null}``: replaces the whole behaviour (omitted fields take their defaults), as
  :meth:`StubLLMServer.configure` does.
- ``GET /_stub/requests``: ``[{"path": ..., "body": ...}, ...]`` in arrival order.
- ``POST /_stub/reset``: default behaviour, no recorded requests.

The default answer has three lines and starts with :data:`STUB_LABEL`, so nobody mistakes it for
a model's output and results with newlines are exercised. It is a pure function of the request's
last user message (:func:`default_answer`).

Run standalone: ``python -m agentrun_devcluster.stub_llm --port 8011``; the first line on stdout
is ``agentrun stub LLM listening on <base_url>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Final

from aiohttp import web

STUB_LABEL: Final = "[agentrun stub LLM]"
STUB_MODEL: Final = "agentrun-stub"
"""The model id listed by ``/v1/models``; any model name is accepted."""
_STREAM_PIECE_CHARS: Final = 16
"""Characters of the answer per streamed delta: several deltas even for a short answer."""


@dataclass
class StubBehaviour:
    """What the stub does with the next requests."""

    delay_seconds: float = 0.0
    """Wait this long before answering (before the first streamed chunk)."""
    fail_status: int | None = None
    """Answer every LLM request with this HTTP status and an OpenAI-style error body."""
    answer: str | None = None
    """Answer text instead of :func:`default_answer`."""


def last_user_text(messages: Any) -> str:
    """The text of the last user message of a chat-completions ``messages`` or responses
    ``input`` value ('' when there is none)."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role", "user") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            parts = [
                str(part.get("text", ""))
                for part in content
                if isinstance(part, dict) and "text" in part
            ]
            return "\n".join(parts)
    return ""


def default_answer(user_text: str) -> str:
    """The stub's deterministic three-line answer to ``user_text``."""
    digest = hashlib.sha256(user_text.encode()).hexdigest()[:12]
    first_line = " ".join(user_text.split())[:120]
    return (
        f"{STUB_LABEL} Deterministic answer; no real model was called.\n"
        f"Request {digest}: {first_line}\n"
        "This is the third line of a multi-line answer."
    )


def json_answer(text: str) -> str:
    """A valid JSON object for ``json_object`` mode: ``text`` itself when it already is one."""
    with contextlib.suppress(ValueError):
        if isinstance(json.loads(text), dict):
            return text
    return json.dumps({"stub": STUB_LABEL, "answer": text}, ensure_ascii=False)


def _usage_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _pieces(text: str) -> list[str]:
    return [
        text[i : i + _STREAM_PIECE_CHARS] for i in range(0, len(text), _STREAM_PIECE_CHARS)
    ] or [""]


def _wants_json_chat(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _wants_json_responses(body: dict[str, Any]) -> bool:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class StubLLMServer:
    """The stub as an aiohttp server on ``host:port`` (port 0: a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.base_url = ""
        """``http://host:port/v1``: OpenAI clients' base URL."""
        self.root_url = ""
        """``http://host:port``: Anthropic clients' base URL (they append ``/v1/messages``)."""
        self.requests: list[dict[str, Any]] = []
        """Recorded JSON request bodies of the LLM endpoints, in arrival order."""
        self.request_paths: list[str] = []
        """The path of each entry of :attr:`requests`."""
        self.behaviour = StubBehaviour()
        self._runner: web.AppRunner | None = None
        self._counter = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Start serving; returns the base URL ending in ``/v1``."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/api/chat", self._ollama_chat)
        app.router.add_post("/api/generate", self._ollama_generate)
        app.router.add_post("/api/show", self._ollama_show)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/_stub/configure", self._configure)
        app.router.add_get("/_stub/requests", self._recorded)
        app.router.add_post("/_stub/reset", self._reset)
        # A short shutdown timeout: a test that stops the stub while a delayed answer is still
        # pending (its client gone) must not wait for it.
        # handler_cancellation: a client that hangs up (a runner killed mid-call) ends its
        # delayed answer at once.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def configure(
        self,
        *,
        delay_seconds: float = 0,
        fail_status: int | None = None,
        answer: str | None = None,
    ) -> None:
        """Replace the behaviour for the next requests (omitted arguments reset to defaults)."""
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        if fail_status is not None and not 400 <= fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400-599)")
        self.behaviour = StubBehaviour(float(delay_seconds), fail_status, answer)

    # -- shared request handling ------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-stub-{self._counter}"

    async def _read_llm_request(
        self, request: web.Request, error: Callable[[int, str], web.HTTPException] | None = None
    ) -> dict[str, Any]:
        """The request's JSON body, recorded; raises the configured failure as ``error`` (the
        API's own error shape, OpenAI's by default) builds it."""
        error = error or _openai_error
        try:
            body = await request.json()
        except ValueError as exc:
            raise error(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise error(400, "request body must be a JSON object")
        self.requests.append(body)
        self.request_paths.append(request.path)
        behaviour = self.behaviour
        if behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        if behaviour.fail_status is not None:
            raise error(
                behaviour.fail_status,
                f"{STUB_LABEL} configured to fail with HTTP {behaviour.fail_status}",
            )
        return body

    def _answer_for(self, user_text: str, *, json_mode: bool) -> str:
        text = self.behaviour.answer
        if text is None:
            text = default_answer(user_text)
        return json_answer(text) if json_mode else text

    # -- /v1/chat/completions -----------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_llm_request(request)
        model = str(body.get("model") or STUB_MODEL)
        prompt_text = last_user_text(body.get("messages"))
        answer = self._answer_for(prompt_text, json_mode=_wants_json_chat(body))
        completion_id = self._next_id("chatcmpl")
        created = int(time.time())
        usage = {
            "prompt_tokens": _usage_tokens(prompt_text),
            "completion_tokens": _usage_tokens(answer),
            "total_tokens": _usage_tokens(prompt_text) + _usage_tokens(answer),
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        response = await _start_sse(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await response.write(_sse(chunk({"role": "assistant", "content": ""}, None)))
        for piece in _pieces(answer):
            await response.write(_sse(chunk({"content": piece}, None)))
        await response.write(_sse(chunk({}, "stop")))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage_chunk = chunk({}, None) | {"choices": [], "usage": usage}
            await response.write(_sse(usage_chunk))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- /v1/responses ------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_llm_request(request)
        model = str(body.get("model") or STUB_MODEL)
        prompt_text = last_user_text(body.get("input"))
        answer = self._answer_for(prompt_text, json_mode=_wants_json_responses(body))
        response_id = self._next_id("resp")
        message_id = self._next_id("msg")
        created = int(time.time())
        usage = {
            "input_tokens": _usage_tokens(prompt_text),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": _usage_tokens(answer),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": _usage_tokens(prompt_text) + _usage_tokens(answer),
        }

        def message(status: str, text: str | None) -> dict[str, Any]:
            content = (
                []
                if text is None
                else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
            )
            return {
                "type": "message",
                "id": message_id,
                "status": status,
                "role": "assistant",
                "content": content,
            }

        def envelope(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage if status == "completed" else None,
            }

        if not body.get("stream"):
            return web.json_response(envelope("completed", [message("completed", answer)]))

        response = await _start_sse(request)
        part_ref = {"item_id": message_id, "output_index": 0, "content_index": 0}
        empty_part = {"type": "output_text", "text": "", "annotations": []}
        done_part = {"type": "output_text", "text": answer, "annotations": []}
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": envelope("in_progress", [])}),
            ("response.in_progress", {"response": envelope("in_progress", [])}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": message("in_progress", None)},
            ),
            ("response.content_part.added", part_ref | {"part": empty_part}),
        ]
        events += [
            ("response.output_text.delta", part_ref | {"delta": piece, "logprobs": []})
            for piece in _pieces(answer)
        ]
        events += [
            ("response.output_text.done", part_ref | {"text": answer, "logprobs": []}),
            ("response.content_part.done", part_ref | {"part": done_part}),
            (
                "response.output_item.done",
                {"output_index": 0, "item": message("completed", answer)},
            ),
            (
                "response.completed",
                {"response": envelope("completed", [message("completed", answer)])},
            ),
        ]
        for seq, (kind, payload) in enumerate(events):
            await response.write(_sse({"type": kind, "sequence_number": seq, **payload}, kind))
        await response.write_eof()
        return response

    # -- /v1/messages (Anthropic) -------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_llm_request(request, _anthropic_error)
        model = str(body.get("model") or STUB_MODEL)
        prompt_text = last_user_text(body.get("messages"))
        answer = self._answer_for(prompt_text, json_mode=False)
        message_id = self._next_id("msg")
        input_tokens, output_tokens = _usage_tokens(prompt_text), _usage_tokens(answer)

        def message(content: list[dict[str, Any]], stop: str | None, out: int) -> dict[str, Any]:
            return {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": out},
            }

        if not body.get("stream"):
            return web.json_response(
                message([{"type": "text", "text": answer}], "end_turn", output_tokens)
            )
        response = await _start_sse(request)
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": message([], None, 1)},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
        ]
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in _pieces(answer)
        ]
        events += [
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            {"type": "message_stop"},
        ]
        for event in events:
            await response.write(_sse(event, str(event["type"])))
        await response.write_eof()
        return response

    # -- /api/chat, /api/generate, /api/show (Ollama) -----------------------------------------

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_llm_request(request, _ollama_error)
        answer = self._answer_for(last_user_text(body.get("messages")), json_mode=False)
        return await self._ollama_answer(
            request, body, answer, lambda text: {"message": {"role": "assistant", "content": text}}
        )

    async def _ollama_generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_llm_request(request, _ollama_error)
        answer = self._answer_for(str(body.get("prompt") or ""), json_mode=False)
        return await self._ollama_answer(request, body, answer, lambda text: {"response": text})

    async def _ollama_answer(
        self,
        request: web.Request,
        body: dict[str, Any],
        answer: str,
        content: Callable[[str], dict[str, Any]],
    ) -> web.StreamResponse:
        model = str(body.get("model") or STUB_MODEL)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        done = {
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": _usage_tokens(json.dumps(body)),
            "eval_count": _usage_tokens(answer),
        }
        # Ollama streams unless told not to.
        if body.get("stream") is False:
            return web.json_response(
                {"model": model, "created_at": created} | content(answer) | done
            )
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for piece in _pieces(answer):
            line = {"model": model, "created_at": created} | content(piece) | {"done": False}
            await response.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        last = {"model": model, "created_at": created} | content("") | done
        await response.write(json.dumps(last).encode() + b"\n")
        await response.write_eof()
        return response

    async def _ollama_show(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "modelfile": "",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"family": "stub", "parameter_size": "0B"},
                "model_info": {"general.architecture": "stub", "stub.context_length": 8192},
                "capabilities": ["completion"],
            }
        )

    # -- the rest ------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": STUB_MODEL, "object": "model", "created": 0, "owned_by": "agentrun"}
                ],
            }
        )

    async def _configure(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise TypeError("body must be a JSON object")
            unknown = set(body) - {"delay_seconds", "fail_status", "answer"}
            if unknown:
                raise TypeError(f"unknown fields: {sorted(unknown)}")
            delay = body.get("delay_seconds", 0)
            fail = body.get("fail_status")
            answer = body.get("answer")
            if not isinstance(delay, int | float) or isinstance(delay, bool):
                raise TypeError("delay_seconds must be a number")
            if fail is not None and (not isinstance(fail, int) or isinstance(fail, bool)):
                raise TypeError("fail_status must be an integer or null")
            if answer is not None and not isinstance(answer, str):
                raise TypeError("answer must be a string or null")
            self.configure(delay_seconds=delay, fail_status=fail, answer=answer)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.behaviour))

    async def _recorded(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"path": path, "body": body}
                for path, body in zip(self.request_paths, self.requests, strict=True)
            ]
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.behaviour = StubBehaviour()
        self.requests.clear()
        self.request_paths.clear()
        return web.json_response(asdict(self.behaviour))


def _openai_error(status: int, message: str) -> web.HTTPException:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return _ErrorResponse(status, payload)


def _ollama_error(status: int, message: str) -> web.HTTPException:
    return _ErrorResponse(status, {"error": message})


def _anthropic_error(status: int, message: str) -> web.HTTPException:
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return _ErrorResponse(status, {"type": "error", "error": {"type": kind, "message": message}})


class _ErrorResponse(web.HTTPException):
    """An HTTP error with any status code and a JSON body (aiohttp's classes fix the status)."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        self.status_code = status
        super().__init__(text=json.dumps(payload), content_type="application/json")


async def _start_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


class StubLLMThread:
    """The stub on its own event loop in a daemon thread, for synchronous tests and tools.

    ``with StubLLMThread() as stub: stub.base_url; stub.server.configure(...)``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = StubLLMServer(host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def root_url(self) -> str:
        return self.server.root_url

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self.server.stop()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> StubLLMThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    server = StubLLMServer(args.host, args.port)
    server.configure(
        delay_seconds=args.delay_seconds, fail_status=args.fail_status, answer=args.answer
    )
    base_url = await server.start()
    print(f"agentrun stub LLM listening on {base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentrun_devcluster.stub_llm",
        description="A local OpenAI-compatible stub LLM with deterministic, labelled answers.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay-seconds", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=None)
    parser.add_argument("--answer", default=None)
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
