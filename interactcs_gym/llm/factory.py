"""``make_backend``: one call that turns a name, a config dict or an instance into a chat back-end."""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.names import build
from interactcs_gym.llm.base import ChatBackend
from interactcs_gym.llm.settings import resolve, setting_names

#: Back-end names -> "module:Class" (imported on use, so optional dependencies stay optional).
BACKENDS: dict[str, str] = {
    "openai": "interactcs_gym.llm.openai_backend:OpenAIChatBackend",
    "http": "interactcs_gym.llm.openai_backend:OpenAIChatBackend",
    "transformers": "interactcs_gym.llm.transformers_backend:TransformersChatBackend",
}


def make_backend(spec: str | ChatBackend | dict[str, Any] | None = None, *,
                 role: str | None = None, **kwargs: Any) -> ChatBackend:
    """Build a chat back-end.

    ``spec``: a :class:`ChatBackend` (returned as is), a name of :data:`BACKENDS`, a
    ``"module:Class"`` path, a dict ``{"backend": name, **kwargs}`` (what a YAML config holds), or
    None for the name in ``INTERACTCS_[<ROLE>_]LLM_BACKEND`` (default ``"openai"``). ``role``
    (``"user"``, ``"judge"``, ``"agent"``) selects role-specific environment variables; ``kwargs``
    go to the back-end (``base_url``, ``model``, ``api_key``, ``timeout``, ``sampling``, ...).

    >>> make_backend("openai", base_url="http://127.0.0.1:8000/v1", model="my-model")  # doctest: +SKIP
    """
    if isinstance(spec, ChatBackend):
        if kwargs:
            raise ValueError(f"kwargs {sorted(kwargs)} cannot apply to an existing back-end instance")
        return spec
    if isinstance(spec, dict):
        kwargs = {**spec, **kwargs}
        spec = kwargs.pop("backend", None)
    name = resolve("BACKEND", spec, role=role) or "openai"
    if not isinstance(name, str) or (name not in BACKENDS and ":" not in name):
        raise ValueError(f"unknown chat back-end {name!r}: use one of {sorted(BACKENDS)}, "
                         f"'module:Class' or a ChatBackend instance (env: {setting_names('BACKEND', role)})")
    if BACKENDS.get(name, name) in BACKENDS.values():
        kwargs["role"] = role
    return build("chat back-end", BACKENDS, ChatBackend, name, kwargs)
