"""Any OpenAI-compatible chat endpoint: OpenAI, Ollama, vLLM, LM Studio, llama.cpp server."""

from __future__ import annotations

import math
from collections.abc import Iterator

from rag.config import Settings
from rag.errors import ConfigError, GeneratorError, GeneratorUnavailableError
from rag.judge import judge_request, parse_verdict, verdict_request, yes_share
from rag.types import GenerationRequest


class OpenAIGenerator:
    """Streams chat completions; the API key is a SecretStr and never appears in messages."""

    name = "openai"
    reads_cheaply = False  # a reading is one more paid request: asked only with RAG_ANSWERABILITY_READER=model

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        context_tokens: int = 8192,
    ) -> None:
        import openai

        self.base_url = base_url
        self.model = model
        self.context_tokens = context_tokens
        self._client = openai.OpenAI(
            base_url=base_url,
            # Local servers ignore the key but the client insists on one.
            api_key=api_key or "not-needed",
            timeout=timeout,
            max_retries=retries,
        )
        self._logprobs: bool | None = None  # whether the endpoint returns log probabilities

    @classmethod
    def from_settings(cls, settings: Settings) -> "OpenAIGenerator":
        if not settings.openai_base_url:
            raise ConfigError(
                "RAG_OPENAI_BASE_URL is not set; set it to your endpoint (for example "
                "http://127.0.0.1:8080/v1) in .env, see .env.example"
            )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(
            settings.openai_base_url,
            settings.openai_model,
            api_key=key,
            timeout=settings.openai_timeout,
            retries=settings.openai_retries,
            context_tokens=settings.llm_context_tokens,
        )

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        import openai

        said_something = finished = False
        response = None
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[m.model_dump() for m in request.messages],  # type: ignore[misc]
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
            )
            for event in response:
                if not event.choices:
                    continue
                finished = finished or event.choices[0].finish_reason is not None
                text = event.choices[0].delta.content
                if text:
                    said_something = True
                    yield text
        except (openai.APIError, ValueError) as exc:
            raise self._explain(exc, said_something) from None
        finally:
            if response is not None:
                response.close()  # stopped early (deadline, user): free the connection now
        if not finished:
            # A body that just ends (the server died between two events) looks complete to the
            # client; every OpenAI-compatible server sends a finish_reason on its last chunk.
            raise GeneratorError(
                f"the endpoint {self.base_url} ended the stream before the answer was complete"
            )

    def judge(self, request: GenerationRequest) -> float | None:
        """The endpoint's share of "yes" when asked whether the passages of `request` state the
        answer: one token with log probabilities where the endpoint gives them, else a one-word
        JSON verdict (1.0 or 0.0); None when the reply says neither."""
        import openai

        try:
            if self._logprobs is not False:
                share = self._yes_logprob(judge_request(request))
                self._logprobs = share is not None
                if share is not None:
                    return share
            asked = verdict_request(request)
            reply = self._client.chat.completions.create(
                model=self.model, messages=[m.model_dump() for m in asked.messages],  # type: ignore[misc]
                max_tokens=asked.max_tokens, temperature=0.0,
            )
        except (openai.APIError, ValueError) as exc:
            raise self._explain(exc, False) from None
        return parse_verdict(reply.choices[0].message.content or "") if reply.choices else None

    def _yes_logprob(self, asked: GenerationRequest) -> float | None:
        import openai

        try:
            reply = self._client.chat.completions.create(
                model=self.model, messages=[m.model_dump() for m in asked.messages],  # type: ignore[misc]
                max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=10,
            )
        except openai.BadRequestError:
            return None  # the endpoint does not offer log probabilities
        choice = reply.choices[0] if reply.choices else None
        content = choice.logprobs.content if choice is not None and choice.logprobs else None
        if not content:
            return None
        return yes_share((c.token, math.exp(c.logprob)) for c in content[0].top_logprobs or [])

    def _explain(self, exc: Exception, said_something: bool) -> Exception:
        """The product error for a client error, in plain words naming the setting to check."""
        import openai

        where = f"the endpoint {self.base_url}"
        if isinstance(exc, openai.AuthenticationError):
            return GeneratorUnavailableError(f"{where} rejected the API key; check RAG_OPENAI_API_KEY")
        if isinstance(exc, openai.NotFoundError):
            return GeneratorUnavailableError(
                f"{where} does not serve model {self.model!r} or has no chat completions; "
                "check RAG_OPENAI_MODEL and RAG_OPENAI_BASE_URL"
            )
        if isinstance(exc, openai.APITimeoutError):
            return GeneratorError(f"{where} did not answer in time; raise RAG_OPENAI_TIMEOUT or check the server")
        if isinstance(exc, openai.APIConnectionError):
            if said_something:
                return GeneratorError(f"the connection to {self.base_url} broke off while answering")
            return GeneratorUnavailableError(
                f"cannot reach {self.base_url}; check RAG_OPENAI_BASE_URL and that the server is running"
            )
        if isinstance(exc, openai.RateLimitError):
            return GeneratorError(f"{where} is rate limiting (HTTP 429) after retries; try again later")
        if isinstance(exc, openai.APIStatusError):
            return GeneratorError(f"{where} answered HTTP {exc.status_code}; check the server logs")
        if isinstance(exc, openai.APIError):
            # An `error` event inside a 200 stream. Its text is the server's, so it is not echoed.
            return GeneratorError(f"{where} sent an error instead of an answer; check the server logs")
        # The openai client parses each event with json.loads and lets a ValueError through.
        return GeneratorError(f"{where} sent a malformed event; is it OpenAI-compatible?")
