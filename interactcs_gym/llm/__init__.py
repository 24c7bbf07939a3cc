"""Chat back-ends (OpenAI-compatible HTTP, local transformers) behind one interface."""

from interactcs_gym.llm.base import ChatBackend, ChatBackendError, Messages

__all__ = ["ChatBackend", "ChatBackendError", "Messages"]
