"""Chat back-ends (OpenAI-compatible HTTP, local transformers) behind one interface.

``make_backend("openai", base_url=..., model=...)`` or ``make_backend("transformers", model=dir)``;
settings default to environment variables (:mod:`interactcs_gym.llm.settings`). Neither ``openai``
nor torch is imported until a back-end is created.
"""

from interactcs_gym.llm.base import ChatBackend, ChatBackendError, Messages
from interactcs_gym.llm.factory import BACKENDS, make_backend

__all__ = ["BACKENDS", "ChatBackend", "ChatBackendError", "Messages", "make_backend"]
