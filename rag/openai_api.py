"""The documents as an OpenAI-compatible "model": `/v1/chat/completions` and `/v1/models`.

Any client that speaks the OpenAI chat protocol (the `openai` package, LangChain, editors, chat
front-ends) can point its base URL at `http://HOST:PORT/v1` of `rag serve`:

* `POST /v1/chat/completions`, streaming (`"stream": true`, server-sent `data: {...}` events of
  `chat.completion.chunk` objects, then `data: [DONE]`) or not (one `chat.completion`). The last
  user message is the question; the user/assistant pairs before it are the conversation, used to
  rewrite a follow-up ("what about its licence?") into a standalone question. System messages
  are ignored: the answering rules are the product's own. Sampling parameters are ignored too.
* `GET /v1/models` (and `/v1/models/{id}`): one model per generator this machine can use:
  `rag` (the configured generator, `auto` by default), then `rag-llamacpp`, `rag-openai`,
  `rag-extractive` when available.

The answer text carries the `[n]` markers. Two fields beyond the OpenAI shape sit next to the
content, on `choices[0].message` of a completion and on `choices[0].delta` of the final chunk of
a stream:

* `citations`: one object a marker, `{"marker", "file", "start_line", "end_line", "page",
  "quote", "verified"}` (the quote is checked to appear at those lines of the file);
* `refused`: true when the documents do not hold the answer (the text is then the refusal).

While streaming, the text is the generator's as written; the answer is checked once it is
complete (markers pointing nowhere removed, unsupported ones re-pointed, an answer that recites
the instructions withheld), so the final chunk also carries `text`, the checked answer that the
`citations` refer to. With the extractive generator the two are the same.

Errors use OpenAI's shape, `{"error": {"message", "type", "code"}}`: 400 for a bad body or an
empty or too long question, 401 when `RAG_AUTH` is set and `Authorization: Bearer <key>` does
not carry its password, 404 for an unknown model, 503 while there is no index to answer from.
The Rag calls are synchronous: they run in the server's thread pool, so requests run concurrently.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.errors import (
    ConfigError,
    EmbeddingError,
    GeneratorError,
    IndexStoreError,
    QuestionError,
    RagError,
)
from rag.generation import AUTO
from rag.pipeline import AnswerStream, Rag
from rag.types import Answer, Citation, Note

MODEL_PREFIX = "rag"
OWNER = "rag"


class ApiError(Exception):
    """An error answered in OpenAI's shape with its HTTP status."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.status == 503:
            headers["Retry-After"] = "5"  # a first build or a backend may be on its way
        return JSONResponse(body, status_code=self.status, headers=headers)


def _bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code)


def error_for(exc: RagError) -> ApiError:
    """The HTTP status and OpenAI error type of one of the product's errors."""
    if isinstance(exc, QuestionError):
        return _bad_request(str(exc), "invalid_question")
    if isinstance(exc, IndexStoreError):
        return ApiError(503, str(exc), "server_error", "index_unavailable")
    if isinstance(exc, ConfigError):  # e.g. no documents folder yet: nothing to index
        return ApiError(503, str(exc), "server_error", "index_unavailable")
    if isinstance(exc, (GeneratorError, EmbeddingError)):
        return ApiError(503, str(exc), "server_error", "backend_unavailable")
    return ApiError(500, str(exc), "server_error", "internal_error")


# -- the request -------------------------------------------------------------------------------
class _Lenient(BaseModel):
    # Clients send many fields this server has no use for (temperature, tools, user, ...).
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text, whether sent as a string or as content parts."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class ChatRequest(_Lenient):
    model: str = MODEL_PREFIX
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


def conversation(messages: Sequence[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last user message) and the (question, answer) pairs before it."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if last is None:
        raise _bad_request("no user message: the last message with role \"user\" is the question",
                           "missing_question")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for message in messages[:last]:
        if message.role == "user":
            pending = message.text()
        elif message.role == "assistant" and pending is not None:
            history.append((pending, message.text()))
            pending = None
    return messages[last].text(), history


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid value')}" if where else str(err.get("msg")))
    return "invalid request body: " + "; ".join(parts)


async def _read_request(request: Request) -> ChatRequest:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad_request("the request body must be JSON, like "
                           '{"model": "rag", "messages": [{"role": "user", "content": "..."}]}') from None
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise _bad_request(_explain(exc)) from None


# -- the response ------------------------------------------------------------------------------
def citation_json(citation: Citation) -> dict[str, Any]:
    return {
        "marker": citation.marker,
        "file": citation.source,
        "start_line": citation.start_line,
        "end_line": citation.end_line,
        "page": citation.page,
        "quote": citation.quote,
        "verified": citation.verified,
    }


def completion_json(answer: Answer, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """A `chat.completion` object for one Answer."""
    message = {
        "role": "assistant",
        "content": answer.text,
        "citations": [citation_json(c) for c in answer.citations],
        "refused": answer.refused,
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": None,
    }


def _chunk(completion_id: str, created: int, model: str, delta: dict, finish: str | None = None) -> str:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


def sse_events(stream: AnswerStream, model: str, completion_id: str, created: int) -> Iterator[str]:
    """The server-sent events of one streamed answer: role, text pieces, the checked answer, [DONE]."""
    try:
        yield _chunk(completion_id, created, model, {"role": "assistant", "content": ""})
        try:
            for piece in stream:
                if isinstance(piece, Note):  # a comment line: clients skip it, a person reading the stream sees it
                    yield f": {piece.text}\n\n"
                elif piece:
                    yield _chunk(completion_id, created, model, {"content": piece})
        except RagError as exc:
            error = error_for(exc)
            body = {"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}}
            yield f"data: {json.dumps(body, ensure_ascii=False)}\n\n"
            return
        answer = stream.answer
        assert answer is not None
        final = {
            "text": answer.text,
            "citations": [citation_json(c) for c in answer.citations],
            "refused": answer.refused,
        }
        yield _chunk(completion_id, created, model, final, "stop")
        yield "data: [DONE]\n\n"
    finally:
        if stream.answer is None:
            stream.close()  # the client went away: stop generating


# -- the routes --------------------------------------------------------------------------------
def model_ids(rag: Rag) -> dict[str, str | None]:
    """Model id -> generator name (None: the configured one) for every generator usable here."""
    ids: dict[str, str | None] = {MODEL_PREFIX: None}
    for name in rag.available_generators():
        if name != AUTO:
            ids[f"{MODEL_PREFIX}-{name}"] = name
    return ids


def _model_json(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def _expected_key(rag: Rag) -> str | None:
    pair = rag.settings.auth_pair()
    return pair[1] if pair else None


def check_key(rag: Rag, request: Request) -> None:
    """With RAG_AUTH set, the bearer key must be its password."""
    expected = _expected_key(rag)
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "this server needs an API key: send the password of RAG_AUTH as "
                       "`Authorization: Bearer <password>` (the api_key of an OpenAI client)",
                       "invalid_request_error", "invalid_api_key")
    if not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "wrong API key: use the password of RAG_AUTH", "invalid_request_error",
                       "invalid_api_key")


def build_router(rag: Rag) -> APIRouter:
    """The `/v1` routes over one Rag."""
    router = APIRouter(prefix="/v1")
    started = int(time.time())

    def resolve(model: str) -> str | None:
        ids = model_ids(rag)
        if model not in ids:
            raise ApiError(404, f"unknown model {model!r}; choose one of {', '.join(ids)}",
                           "invalid_request_error", "model_not_found")
        return ids[model]

    @router.get("/models")
    async def list_models(request: Request) -> JSONResponse:
        try:
            check_key(rag, request)
            ids = await run_in_threadpool(model_ids, rag)
        except ApiError as exc:
            return exc.response()
        return JSONResponse({"object": "list", "data": [_model_json(i, started) for i in ids]})

    @router.get("/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> JSONResponse:
        try:
            check_key(rag, request)
            await run_in_threadpool(resolve, model_id)
        except ApiError as exc:
            return exc.response()
        return JSONResponse(_model_json(model_id, started))

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        try:
            check_key(rag, request)
            body = await _read_request(request)
            generator = await run_in_threadpool(resolve, body.model)
            question, history = conversation(body.messages)
            if not question.strip():
                raise _bad_request("the question (the last user message) is empty; ask something "
                                   "about the documents", "invalid_question")
            completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            if body.stream:
                # Retrieval runs before the first byte, so its errors still get their own status.
                stream = await run_in_threadpool(
                    lambda: rag.ask_stream(question, generator=generator, history=history)
                )
                return StreamingResponse(
                    sse_events(stream, body.model, completion_id, created),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            answer = await run_in_threadpool(
                lambda: rag.ask(question, generator=generator, history=history)
            )
            return JSONResponse(completion_json(answer, body.model, completion_id, created))
        except ApiError as exc:
            return exc.response()
        except RagError as exc:
            return error_for(exc).response()

    return router


def mount_openai_api(app: FastAPI, rag: Rag) -> None:
    """Serve the `/v1` routes from `app` (the one serving the chat page), ahead of its own routes.

    Starlette tries routes in order and Gradio's app ends with catch-all routes, so the new ones
    are moved to the front rather than appended.
    """
    before = len(app.router.routes)
    app.include_router(build_router(rag))
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = added


__all__ = ["mount_openai_api", "build_router", "ApiError"]
