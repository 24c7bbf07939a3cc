"""OpenAI-compatible HTTP chat back-end: ``vllm serve``, ``transformers serve``, any hosted API.

Built on the official ``openai`` package (the ``llm`` extra: ``pip install "interactcs-rl[llm]"``),
imported when a back-end is created, so ``import interactcs_gym`` works without it.

Settings come from kwargs or environment variables (see :mod:`interactcs_gym.llm.settings`):
``INTERACTCS_[<ROLE>_]LLM_BASE_URL`` (fallback ``OPENAI_BASE_URL``), ``..._MODEL``, ``..._API_KEY``
(fallback ``OPENAI_API_KEY``; local servers need none), ``..._TIMEOUT``, ``..._MAX_RETRIES``,
``..._MAX_CONCURRENCY``.

Failure handling. One request is attempted at most ``1 + max_retries`` times. Retried: connection
errors, timeouts, HTTP 408/409/429/5xx, a reply with no choices or empty content, and a body that is
not a valid chat completion. The wait before retry ``k`` (1-based) is
``min(backoff_max, backoff_base * 2**(k-1))`` seconds, stretched by up to 25 % random jitter, or the
server's ``Retry-After`` when it sends one (capped at ``backoff_max``). Other HTTP errors (400, 401,
403, 404, 422) are not retried. What still fails raises :class:`ChatBackendError` with ``kind`` and
``attempts``. The openai client's own retry loop is switched off (``max_retries=0``) so that the
bound above is the only one: a nested loop would multiply the attempts.

Secrets. The API key (and any ``user:password`` in the base URL, also in its Basic-auth form)
never leaves the back-end: :meth:`OpenAIChatBackend.redact` is the one point every text the server
or the HTTP stack produces passes through (reply contents, model ids, error bodies, exception and
log messages), so a server that echoes the key back cannot get it into a reply, an observation,
``info``, a log, a results file or an exception; library exceptions are not chained. Secrets
shorter than :data:`MIN_SECRET_CHARS` are not searched for (they would garble ordinary text).
"""

from __future__ import annotations

import base64
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from interactcs_gym.llm.base import ChatBackend, ChatBackendError, Messages
from interactcs_gym.llm.settings import resolve, resolve_number, setting_names

logger = logging.getLogger(__name__)

#: Sampling arguments the OpenAI chat API takes by name; any other one goes in ``extra_body``
#: (e.g. vLLM's ``top_k``, ``repetition_penalty``, ``chat_template_kwargs``).
OPENAI_SAMPLING_ARGS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "response_format",
})
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
NO_KEY = "EMPTY"  # what vLLM's docs pass to servers that check no key
MIN_SECRET_CHARS = 6
REDACTED = "***"


class _Retryable(Exception):
    """One failed attempt worth retrying (internal)."""

    def __init__(self, kind: str, message: str, status_code: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.status_code, self.retry_after = kind, status_code, retry_after


class OpenAIChatBackend(ChatBackend):
    """Chat completions over HTTP from any OpenAI-compatible server.

    >>> backend = OpenAIChatBackend(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    >>> backend.chat([{"role": "user", "content": "Hello"}], max_tokens=32)  # doctest: +SKIP

    Args:
        base_url: server root including ``/v1``.
        model: served model name; when unset, the first id of the server's ``/v1/models``.
        api_key: bearer key; local servers need none.
        role: ``"user"``, ``"judge"``, ``"agent"`` or None: which role-specific environment
            variables to read first.
        timeout: seconds per request (default 60).
        max_retries: retries after the first attempt (default 3).
        backoff_base, backoff_max: exponential backoff in seconds (defaults 0.5 and 8).
        max_concurrency: parallel requests of :meth:`chat_batch` (default 8).
        sampling: default sampling arguments, overridden by those of each call.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, *, role: str | None = None,
                 timeout: float | None = None, max_retries: int | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 8.0,
                 max_concurrency: int | None = None,
                 sampling: dict[str, Any] | None = None) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError("the HTTP chat back-end needs the openai package: "
                              "pip install 'interactcs-rl[llm]'") from exc
        self._openai = openai
        self.base_url = resolve("BASE_URL", base_url, role=role)
        if not self.base_url:
            raise ChatBackendError(
                "no base URL for the HTTP chat back-end: pass base_url= or set one of "
                f"{setting_names('BASE_URL', role)} (e.g. http://127.0.0.1:8000/v1 for vllm serve)",
                kind="config", attempts=0)
        self.model = resolve("MODEL", model, role=role)
        self._api_key = resolve("API_KEY", api_key, role=role)
        self.timeout = resolve_number("TIMEOUT", timeout, 60.0, role=role)
        self.max_retries = int(resolve_number("MAX_RETRIES", max_retries, 3, role=role, cast=int))
        self.max_concurrency = int(resolve_number("MAX_CONCURRENCY", max_concurrency, 8, role=role,
                                                  cast=int))
        if self.max_retries < 0 or self.max_concurrency < 1 or self.timeout <= 0:
            raise ValueError("max_retries must be >= 0, max_concurrency >= 1 and timeout > 0")
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.sampling = dict(sampling or {})
        self._secrets = _secrets_of(self._api_key, self.base_url)
        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or NO_KEY,
                                     timeout=self.timeout, max_retries=0)

    # ------------------------------------------------------------------ API
    def chat(self, messages: Messages, **sampling: Any) -> str:
        """The reply to one conversation, after at most ``1 + max_retries`` attempts."""
        request = self._request(messages, {**self.sampling, **sampling})
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            outcome = self._attempt(request)
            if isinstance(outcome, str):
                return self.redact(outcome)
            if attempt < attempts:
                delay = self._delay(attempt, outcome.retry_after)
                logger.warning("chat request failed (%s, attempt %d/%d): %s; retrying in %.2fs",
                               outcome.kind, attempt, attempts, outcome, delay)
                time.sleep(delay)
        raise ChatBackendError(
            f"chat request to {self._safe_url()} failed after {attempts} attempt(s): {outcome}",
            kind=outcome.kind, attempts=attempts, status_code=outcome.status_code)

    def chat_batch(self, batch: list[Messages], **sampling: Any) -> list[str]:
        """Replies in order, ``max_concurrency`` requests at a time; the first failure is raised."""
        if len(batch) <= 1 or self.max_concurrency == 1:
            return [self.chat(messages, **sampling) for messages in batch]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batch))) as pool:
            return list(pool.map(lambda m: self.chat(m, **sampling), batch))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return (f"{type(self).__name__}(base_url={self._safe_url()!r}, model={self.model!r}, "
                f"api_key={key}, timeout={self.timeout}, max_retries={self.max_retries})")

    # ------------------------------------------------------------------ helpers
    def _request(self, messages: Messages, sampling: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]}
                                                for m in messages]}
        extra = {k: v for k, v in sampling.items() if k not in OPENAI_SAMPLING_ARGS and v is not None}
        request.update({k: v for k, v in sampling.items() if k in OPENAI_SAMPLING_ARGS and v is not None})
        if extra:
            request["extra_body"] = extra
        return request

    def _attempt(self, request: dict[str, Any]) -> str | _Retryable:
        """One HTTP request: the reply text, or the transient failure to retry.

        Library exceptions are turned into our own outside their ``except`` blocks, so that no
        exception chain carries the library's (unredacted) message.
        """
        try:
            completion = self._client.chat.completions.create(model=self._model_name(), **request)
            failure = None
        except ChatBackendError:
            raise
        except Exception as exc:
            failure = self._classify(exc)
        if isinstance(failure, ChatBackendError):
            raise failure
        return failure if failure is not None else self._content(completion)

    def _classify(self, exc: Exception) -> _Retryable | ChatBackendError:
        openai = self._openai
        if isinstance(exc, openai.APITimeoutError):
            return _Retryable("timeout", f"no reply within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return _Retryable("connection", self.redact(f"{exc} ({exc.__cause__!r})"))
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self.redact(f"HTTP {status}: {exc.message}")
            if status in RETRYABLE_STATUS or status >= 500:
                return _Retryable("http_status", message, status, _retry_after(exc.response.headers))
            return ChatBackendError(f"chat request to {self._safe_url()} rejected: {message}",
                                    kind="http_status", attempts=1, status_code=status)
        # a body that is not a chat completion (bad JSON, wrong shape)
        return _Retryable("invalid_response", self.redact(f"{type(exc).__name__}: {exc}")[:500])

    def _content(self, completion: Any) -> str | _Retryable:
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            return _Retryable("invalid_response", "reply is not a chat completion: "
                              + self.redact(repr(completion))[:300])
        if not isinstance(content, str) or not content.strip():
            return _Retryable("empty", "reply has empty content")
        return content

    def _model_name(self) -> str:
        if self.model:
            return self.model
        try:
            models, problem = [m.id for m in self._client.models.list()], None
        except Exception as exc:
            models, problem = [], type(exc).__name__
        if problem is not None:
            raise ChatBackendError(
                f"no model name given and {self._safe_url()}/models could not list one "
                f"({problem}); pass model= or set one of {setting_names('MODEL')}",
                kind="config", attempts=1)
        if not models:
            raise ChatBackendError(f"{self._safe_url()} serves no model", kind="config", attempts=1)
        self.model = self.redact(str(models[0]))
        return self.model

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.backoff_max, max(0.0, retry_after))
        return min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)) * random.uniform(1.0, 1.25)

    def redact(self, text: str) -> str:
        """``text`` with every secret this back-end holds replaced by ``***``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _safe_url(self) -> str:
        """The base URL without any user:password part."""
        parts = urlsplit(self.base_url or "")
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
        return self.redact(self.base_url or "")


def _secrets_of(api_key: str | None, base_url: str | None) -> list[str]:
    """What a server could echo back: the key, URL credentials and their Basic-auth encoding;
    longest first, so a secret that contains another is replaced whole."""
    found = [api_key or ""]
    parts = urlsplit(base_url or "")
    if parts.password:
        userinfo = f"{parts.username or ''}:{parts.password}"
        found += [parts.password, userinfo, base64.b64encode(userinfo.encode()).decode()]
    return sorted({s for s in found if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (dates are ignored)."""
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
