"""Chat back-ends: one small interface for every LLM the suite talks to (SPEC section 7).

Used by the LLM user simulator, the judges and the LLM agent. A back-end turns chat messages
(``[{"role": ..., "content": ...}, ...]``) into the assistant's reply text. ``chat_batch`` answers
many conversations at once (concurrent HTTP requests, or one batched ``generate``).

Failures that survive the back-end's bounded retries raise :class:`ChatBackendError` (or a
subclass), never a library-specific exception, so callers can record a clean outcome.
"""

from __future__ import annotations

import abc
from typing import Any

Messages = list[dict[str, str]]


class ChatBackendError(RuntimeError):
    """A chat request failed after the back-end's retries (connection, timeout, HTTP, empty reply).

    ``kind`` says what failed last: ``"connection"``, ``"timeout"``, ``"http_status"``, ``"empty"``,
    ``"invalid_response"``, ``"config"`` or ``"error"``; ``attempts`` how many requests were made;
    ``status_code`` the HTTP status where there was one. Messages never contain API keys.
    """

    def __init__(self, message: str, *, kind: str = "error", attempts: int = 1,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.status_code = status_code


class ChatBackend(abc.ABC):
    """Interface of a chat back-end. Subclasses implement :meth:`chat`; batching is optional."""

    @abc.abstractmethod
    def chat(self, messages: Messages, **sampling: Any) -> str:
        """The reply to one conversation. ``sampling``: temperature, top_p, max_tokens, seed, stop."""

    def chat_batch(self, batch: list[Messages], **sampling: Any) -> list[str]:
        """Replies to many conversations, in order. Default: one after the other."""
        return [self.chat(messages, **sampling) for messages in batch]

    def close(self) -> None:
        """Release connections or models."""
