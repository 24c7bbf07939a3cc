"""Keep secrets out of results files (SPEC section 7: API keys never appear in logs or results).

Two layers:

* :func:`redact_kwargs`: before a run's config is hashed or written, every value whose key looks
  like a credential (``api_key``, ``openai_api_key``, ``token``, ``hf_token``, ``secret``,
  ``password``, ``authorization``, ... but not ``max_tokens`` or ``tokenizer``) becomes
  :data:`REDACTED`, at any depth; credentials inside URLs (``https://user:pass@host``) are removed.
* :class:`Scrubber`: every record is scrubbed just before it is written. It replaces the literal
  values that were redacted from the kwargs, the values of credential-looking environment variables
  (``OPENAI_API_KEY``, ``HF_TOKEN`` ...) and token-shaped strings (``sk-...``, ``hf_...``,
  ``Bearer ...``) anywhere in the record: in a traceback message, in a transcript, in an info value.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

REDACTED = "***"

_SECRET_NAME = re.compile(
    r"(?:^|[_\-.])(?:api[_\-]?key|apikey|key|secret|secret[_\-]?key|password|passwd|token|"
    r"access[_\-]?token|auth|authorization|credentials?|bearer|cookie)$",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/@\s:]+(?::[^/@\s]*)?@")
_TOKEN_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{12,}|hf_[A-Za-z0-9]{12,}|gh[pousr]_[A-Za-z0-9]{16,}|"
    r"xox[abp]-[A-Za-z0-9\-]{10,})"
    r"|(?<=Bearer )[A-Za-z0-9_\-.=]{12,}"
)
_MIN_SECRET_LEN = 6


def looks_like_secret_name(name: str) -> bool:
    """``True`` for ``api_key``, ``OPENAI_API_KEY``, ``hf_token``, ``password``; ``False`` for
    ``max_tokens``, ``tokenizer``, ``key_facts``."""
    return bool(_SECRET_NAME.search(str(name)))


def redact_kwargs(value: Any, *, found: list[str] | None = None) -> Any:
    """A copy of ``value`` with credential-looking entries replaced by :data:`REDACTED`.

    The literal secrets removed are appended to ``found`` (so a :class:`Scrubber` can also remove
    them wherever else they show up).
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if looks_like_secret_name(k) and v not in (None, "", REDACTED):
                _collect(v, found)
                out[k] = REDACTED
            else:
                out[k] = redact_kwargs(v, found=found)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_kwargs(v, found=found) for v in value]
    if isinstance(value, str):
        cleaned = _URL_CREDENTIALS.sub(r"\g<scheme>", value)
        cleaned = _TOKEN_SHAPES.sub(REDACTED, cleaned)
        if cleaned != value and found is not None:
            found.append(value)
        return cleaned
    return value


def _collect(value: Any, found: list[str] | None) -> None:
    if found is None:
        return
    if isinstance(value, Mapping):
        for v in value.values():
            _collect(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, found)
    elif value is not None:
        found.append(str(value))


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of credential-looking environment variables (``*_API_KEY``, ``*_TOKEN`` ...)."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if looks_like_secret_name(k) and len(v) >= _MIN_SECRET_LEN]


class Scrubber:
    """Replace known secret strings and token-shaped strings in any JSON-able value."""

    def __init__(self, secrets: Iterable[str] = (), *, include_environment: bool = True) -> None:
        values = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN}
        if include_environment:
            values.update(secrets_from_environment())
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_CREDENTIALS.sub(r"\g<scheme>", text)
        return _TOKEN_SHAPES.sub(REDACTED, text)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value
