"""The stub LLM over real HTTP on 127.0.0.1: OpenAI wire shapes, configuration, recording."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from agentrun_devcluster.stub_llm import (
    STUB_LABEL,
    StubLLMServer,
    StubLLMThread,
    default_answer,
    json_answer,
    last_user_text,
)

MESSAGES = [
    {"role": "system", "content": "You are a helper."},
    {"role": "user", "content": "Analyze the quarterly sales data"},
]


@pytest.fixture
async def stub() -> AsyncIterator[StubLLMServer]:
    server = StubLLMServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_default_answer_is_labelled_multiline_and_deterministic() -> None:
    answer = default_answer("Analyze the quarterly sales data")
    assert answer.startswith(STUB_LABEL)
    assert answer.count("\n") == 2
    assert "Analyze the quarterly sales data" in answer
    assert answer == default_answer("Analyze the quarterly sales data")
    assert answer != default_answer("something else")


def test_last_user_text_handles_strings_parts_and_no_user() -> None:
    assert last_user_text("plain") == "plain"
    assert last_user_text(MESSAGES) == "Analyze the quarterly sales data"
    parts = [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"text": "b"}]}]
    assert last_user_text(parts) == "a\nb"
    assert last_user_text([{"role": "system", "content": "x"}]) == ""
    assert last_user_text(None) == ""


def test_json_answer_is_always_an_object() -> None:
    assert json.loads(json_answer("two\nlines"))["answer"] == "two\nlines"
    assert json_answer('{"a": 1}') == '{"a": 1}'
    assert isinstance(json.loads(json_answer("[1, 2]")), dict)


async def test_base_url_ends_in_v1_and_models_lists_the_stub(stub: StubLLMServer) -> None:
    assert stub.base_url.startswith("http://127.0.0.1:")
    assert stub.base_url.endswith("/v1")
    async with httpx.AsyncClient() as client:
        models = (await client.get(f"{stub.base_url}/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["agentrun-stub"]


async def test_chat_completion_non_stream(stub: StubLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stub.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == default_answer(
        "Analyze the quarterly sales data"
    )
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0
    assert stub.requests == [{"model": "m", "messages": MESSAGES}]
    assert stub.request_paths == ["/v1/chat/completions"]


async def test_chat_completion_stream_reassembles_and_ends_with_done(stub: StubLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stub.base_url}/chat/completions",
            json={
                "model": "m",
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    data = _sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == default_answer("Analyze the quarterly sales data")
    assert len([c for c in chunks if c["choices"]]) > 3, "several deltas, not one"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


async def test_chat_json_object_mode_answers_a_json_object(stub: StubLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stub.base_url}/chat/completions",
            json={
                "model": "m",
                "messages": MESSAGES,
                "response_format": {"type": "json_object"},
            },
        )
    content = response.json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict)


async def test_responses_non_stream_and_stream(stub: StubLLMServer) -> None:
    expected = default_answer("Analyze the quarterly sales data")
    async with httpx.AsyncClient() as client:
        plain = (
            await client.post(
                f"{stub.base_url}/responses", json={"model": "gpt-4o", "input": MESSAGES}
            )
        ).json()
        streamed = await client.post(
            f"{stub.base_url}/responses",
            json={"model": "gpt-4o", "input": MESSAGES, "stream": True},
        )
    assert plain["object"] == "response"
    assert plain["status"] == "completed"
    assert plain["output"][0]["content"][0]["text"] == expected
    events = [json.loads(d) for d in _sse_data(streamed.text)]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == expected
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == expected


async def test_responses_json_mode(stub: StubLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        plain = (
            await client.post(
                f"{stub.base_url}/responses",
                json={"model": "gpt-4o", "input": "x", "text": {"format": {"type": "json_object"}}},
            )
        ).json()
    assert isinstance(json.loads(plain["output"][0]["content"][0]["text"]), dict)


ANTHROPIC_REQUEST = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": "You are a helper.",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Analyze the quarterly sales data"}]}
    ],
}


async def test_anthropic_messages_non_stream_stream_and_errors(stub: StubLLMServer) -> None:
    expected = default_answer("Analyze the quarterly sales data")
    url = f"{stub.root_url}/v1/messages"
    assert stub.base_url == f"{stub.root_url}/v1"
    async with httpx.AsyncClient() as client:
        plain = (await client.post(url, json=ANTHROPIC_REQUEST)).json()
        streamed = await client.post(url, json=ANTHROPIC_REQUEST | {"stream": True})
        stub.configure(fail_status=529)
        failed = await client.post(url, json=ANTHROPIC_REQUEST)
    assert plain["type"] == "message"
    assert plain["role"] == "assistant"
    assert plain["content"] == [{"type": "text", "text": expected}]
    assert plain["stop_reason"] == "end_turn"
    assert plain["usage"]["output_tokens"] > 0
    events = [json.loads(d) for d in _sse_data(streamed.text)]
    names = [line[len("event: ") :] for line in streamed.text.splitlines() if "event: " in line]
    assert names == [e["type"] for e in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == expected
    assert failed.status_code == 529
    assert failed.json()["type"] == "error"
    assert "configured to fail" in failed.json()["error"]["message"]
    assert stub.request_paths == ["/v1/messages"] * 3


async def test_litellms_anthropic_client_reads_the_stub(
    stub: StubLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client PraisonAI uses for anthropic/ models parses both answers."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import (offline)
    import litellm

    expected = default_answer("Analyze the quarterly sales data")
    common: dict[str, Any] = {
        "model": "anthropic/claude-sonnet-4-5",
        "messages": MESSAGES,
        "api_base": stub.root_url,
        "api_key": "stub",
    }
    plain = await litellm.acompletion(**common)
    assert plain.choices[0].message.content == expected
    pieces = [
        chunk.choices[0].delta.content or ""
        async for chunk in await litellm.acompletion(**common, stream=True)
    ]
    assert "".join(pieces) == expected


async def test_ollama_chat_and_generate_stream_unless_told_not_to(stub: StubLLMServer) -> None:
    expected = default_answer("Analyze the quarterly sales data")
    root = stub.root_url
    async with httpx.AsyncClient() as client:
        chat = await client.post(
            f"{root}/api/chat", json={"model": "llama3.2", "messages": MESSAGES}
        )
        plain_chat = await client.post(
            f"{root}/api/chat", json={"model": "llama3.2", "messages": MESSAGES, "stream": False}
        )
        plain_generate = await client.post(
            f"{root}/api/generate",
            json={
                "model": "llama3.2",
                "prompt": "Analyze the quarterly sales data",
                "stream": False,
            },
        )
        show = await client.post(f"{root}/api/show", json={"name": "llama3.2"})
        stub.configure(fail_status=500)
        failed = await client.post(f"{root}/api/generate", json={"model": "m", "prompt": "x"})
    lines = [json.loads(line) for line in chat.text.splitlines()]
    assert chat.headers["content-type"] == "application/x-ndjson"
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["message"]["content"] for line in lines) == expected
    assert lines[-1]["done_reason"] == "stop"
    assert plain_chat.json()["message"] == {"role": "assistant", "content": expected}
    assert plain_chat.json()["done"] is True
    assert plain_generate.json()["response"] == expected
    assert show.json()["capabilities"] == ["completion"]
    assert failed.status_code == 500
    assert "configured to fail" in failed.json()["error"]
    assert stub.request_paths == ["/api/chat", "/api/chat", "/api/generate", "/api/generate"]


async def test_configure_answer_fail_and_delay(stub: StubLLMServer) -> None:
    url = f"{stub.base_url}/chat/completions"
    request = {"model": "m", "messages": MESSAGES}
    async with httpx.AsyncClient() as client:
        stub.configure(answer="line one\nline two")
        answer = (await client.post(url, json=request)).json()
        assert answer["choices"][0]["message"]["content"] == "line one\nline two"

        stub.configure(fail_status=500)
        failed = await client.post(url, json=request)
        assert failed.status_code == 500
        assert "configured to fail" in failed.json()["error"]["message"]
        stub.configure(fail_status=429)
        assert (await client.post(url, json=request)).status_code == 429

        stub.configure(delay_seconds=0.3)
        started = time.monotonic()
        assert (await client.post(url, json=request)).status_code == 200
        assert time.monotonic() - started >= 0.3

        stub.configure()  # back to the defaults
        again = (await client.post(url, json=request)).json()
        assert again["choices"][0]["message"]["content"].startswith(STUB_LABEL)


async def test_configure_over_http_validates_and_applies(stub: StubLLMServer) -> None:
    root = stub.base_url.removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        bad = await client.post(f"{root}/_stub/configure", json={"fail_status": "x"})
        assert bad.status_code == 400
        assert (await client.post(f"{root}/_stub/configure", json={"nope": 1})).status_code == 400
        assert (await client.post(f"{root}/_stub/configure", json=[1])).status_code == 400
        assert (
            await client.post(f"{root}/_stub/configure", json={"fail_status": 200})
        ).status_code == 400
        ok = await client.post(f"{root}/_stub/configure", json={"fail_status": 503})
        assert ok.json() == {"delay_seconds": 0.0, "fail_status": 503, "answer": None}
        response = await client.post(
            f"{stub.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
        assert response.status_code == 503
        recorded = (await client.get(f"{root}/_stub/requests")).json()
        assert recorded == [
            {"path": "/v1/chat/completions", "body": {"model": "m", "messages": MESSAGES}}
        ]
        await client.post(f"{root}/_stub/reset")
        assert (await client.get(f"{root}/_stub/requests")).json() == []
        assert stub.behaviour.fail_status is None


async def test_malformed_request_body_is_400(stub: StubLLMServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stub.base_url}/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_thread_wrapper_serves_synchronous_callers() -> None:
    with StubLLMThread() as stub:
        response = httpx.post(
            f"{stub.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
        assert response.status_code == 200
        assert len(stub.server.requests) == 1


def test_module_entry_point_prints_url_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentrun_devcluster.stub_llm", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("agentrun stub LLM listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        assert httpx.get(f"{base_url}/models").status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
