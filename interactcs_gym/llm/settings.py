"""Back-end settings from keyword arguments or environment variables.

Each setting is looked up, first match wins, in

1. the keyword argument (``base_url=...``), when it is not ``None``;
2. ``INTERACTCS_<ROLE>_LLM_<FIELD>`` when the back-end serves a role (``USER``: the LLM user
   simulator, ``JUDGE``: the process and quality judges, ``AGENT``: the LLM agent), so that the
   simulated user, the judge and the agent under test can each talk to a different model;
3. ``INTERACTCS_LLM_<FIELD>``, shared by every role;
4. the ``openai`` package's own variables for the HTTP client: ``OPENAI_BASE_URL``,
   ``OPENAI_API_KEY``.

Fields: ``BACKEND`` (``openai`` / ``http`` / ``transformers``), ``BASE_URL``, ``MODEL`` (a served
model name, or a local folder for the transformers back-end), ``API_KEY``, ``TIMEOUT`` (seconds),
``MAX_RETRIES``, ``MAX_CONCURRENCY``, ``DEVICE`` (transformers back-end).
"""

from __future__ import annotations

import os

ROLES = ("user", "judge", "agent")
FIELDS = ("BACKEND", "BASE_URL", "MODEL", "API_KEY", "TIMEOUT", "MAX_RETRIES", "MAX_CONCURRENCY",
          "DEVICE")
_OPENAI_FALLBACKS = {"BASE_URL": "OPENAI_BASE_URL", "API_KEY": "OPENAI_API_KEY"}


def setting_names(field: str, role: str | None = None) -> list[str]:
    """The environment variables consulted for ``field``, in order."""
    field = field.upper()
    if field not in FIELDS:
        raise ValueError(f"unknown back-end setting {field!r}; known: {FIELDS}")
    if role is not None and role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {ROLES} or None")
    names = [f"INTERACTCS_{role.upper()}_LLM_{field}"] if role else []
    names.append(f"INTERACTCS_LLM_{field}")
    if field in _OPENAI_FALLBACKS:
        names.append(_OPENAI_FALLBACKS[field])
    return names


def resolve(field: str, explicit: object = None, *, role: str | None = None) -> str | None:
    """``explicit`` if given, else the first non-empty environment variable of :func:`setting_names`."""
    if explicit is not None:
        return str(explicit)
    for name in setting_names(field, role):
        value = os.environ.get(name)
        if value:
            return value
    return None


def resolve_number(field: str, explicit: object, default: float, *, role: str | None = None,
                   cast: type = float) -> float:
    """A numeric setting; a malformed environment value is a clear error naming the variable."""
    value = resolve(field, explicit, role=role)
    if value is None:
        return cast(default)
    try:
        return cast(value)
    except ValueError:
        raise ValueError(f"back-end setting {field} must be a number, got {value!r} "
                         f"(from a kwarg or one of {setting_names(field, role)})") from None
