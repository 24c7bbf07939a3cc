"""LLMAgent: any chat back-end as the agent under test (hosted API, ``vllm serve``, local model).

Each turn it sends ``info["messages"]`` (the env's system prompt first, then the dialogue) to the
back-end and returns the reply as the action, unchanged: the env judges the protocol. A back-end
failure that survives the back-end's retries raises :class:`ChatBackendError` out of ``act``: the
episode is not recorded, and a resumed evaluation run plays it again (an empty or invented turn
would silently corrupt the benchmark instead).

    python -m interactcs_gym.evaluate --env FDS-Hard-v0 --agent llm --users 80 --seeds 3 \\
        --out results/qwen7b-hard.jsonl   # with INTERACTCS_AGENT_LLM_BASE_URL / _MODEL set
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.agent import Agent
from interactcs_gym.llm import ChatBackend, make_backend

DEFAULT_SAMPLING = {"temperature": 0.7, "max_tokens": 512}


class LLMAgent(Agent):
    """Drive a chat back-end with the env's messages.

    Args:
        backend: a ChatBackend, a back-end name (``"openai"``, ``"transformers"``) or config dict,
            or None for ``INTERACTCS_AGENT_LLM_*`` / ``INTERACTCS_LLM_*`` environment variables.
        sampling: sampling arguments (default temperature 0.7, max_tokens 512); with a ``seed``
            given to :meth:`reset`, each turn's request carries ``seed + turn`` where the
            back-end supports seeds.
        name: the label used in reports (default: the model name).
        **backend_kwargs: passed to :func:`~interactcs_gym.llm.make_backend` (``base_url``,
            ``model``, ``api_key``, ``timeout`` ...).
    """

    def __init__(self, backend: ChatBackend | str | dict | None = None, *,
                 sampling: dict[str, Any] | None = None, name: str | None = None,
                 **backend_kwargs: Any) -> None:
        self.backend = make_backend(backend, role="agent", **backend_kwargs)
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        model = getattr(self.backend, "model", None) or getattr(self.backend, "model_name", None)
        self.name = name or (f"llm:{model}" if isinstance(model, str) else "llm")
        self._seed: int | None = None
        self._turn = 0

    def reset(self, *, seed: int | None = None) -> None:
        self._seed = seed
        self._turn = 0

    def act(self, observation: str, info: dict[str, Any]) -> str:
        return self.act_batch([observation], [info])[0]

    def act_batch(self, observations: list[str], infos: list[dict[str, Any]]) -> list[str]:
        """Turns for many dialogues at once (one ``chat_batch`` call: concurrent requests)."""
        sampling = dict(self.sampling)
        if self._seed is not None:
            sampling["seed"] = self._seed + self._turn
        self._turn += 1
        return self.backend.chat_batch([_messages(info) for info in infos], **sampling)

    def __repr__(self) -> str:
        return f"LLMAgent(backend={self.backend!r})"


def _messages(info: dict[str, Any]) -> list[dict[str, str]]:
    messages = info.get("messages")
    if not messages:
        raise ValueError("LLMAgent needs info['messages'] (the dialogue in chat format) from the env")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
