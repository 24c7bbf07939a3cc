"""Local chat back-end on ``transformers``: any local model folder (or hub id already in the cache).

torch and transformers are imported when a back-end is created, never by ``import interactcs_gym``.
Conversations are rendered with the tokenizer's chat template, padded on the left and generated in
batches of ``batch_size`` with one ``generate`` call each; the reply is the decoded new tokens,
special tokens removed. A model that answers nothing returns ``""`` (callers treat it as a
malformed reply); an error inside ``generate`` raises :class:`ChatBackendError`.

Sampling arguments: ``temperature`` (0 = greedy), ``top_p``, ``top_k``, ``max_tokens``, ``seed``
(seeds torch's global generator before the call), ``stop`` (a string or list of strings, cut from
the reply).
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.llm.base import ChatBackend, ChatBackendError, Messages
from interactcs_gym.llm.settings import resolve, resolve_number, setting_names


class TransformersChatBackend(ChatBackend):
    """Chat with a local model through ``model.generate``.

    Args:
        model: model folder (or cached hub id); default from ``INTERACTCS_[<ROLE>_]LLM_MODEL``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (default: cuda when available).
        dtype: torch dtype name or ``"auto"``.
        batch_size: conversations per ``generate`` call in :meth:`chat_batch`.
        max_new_tokens: default reply length bound (``max_tokens`` overrides it per call).
        sampling: default sampling arguments, overridden by those of each call.
    """

    def __init__(self, model: str | None = None, *, role: str | None = None,
                 device: str | None = None, dtype: str = "auto", batch_size: int | None = None,
                 max_new_tokens: int = 256, sampling: dict[str, Any] | None = None,
                 trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = resolve("MODEL", model, role=role)
        if not self.model_name:
            raise ChatBackendError(f"no model for the transformers back-end: pass model= or set one "
                                   f"of {setting_names('MODEL', role)}", kind="config", attempts=0)
        self._torch = torch
        self.device = resolve("DEVICE", device, role=role) or ("cuda" if torch.cuda.is_available()
                                                               else "cpu")
        self.batch_size = int(resolve_number("MAX_CONCURRENCY", batch_size, 8, role=role, cast=int))
        self.max_new_tokens = int(max_new_tokens)
        self.sampling = dict(sampling or {})
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, padding_side="left",
                                                       trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_name, dtype=torch_dtype, trust_remote_code=trust_remote_code).to(self.device)
        self.model.eval()

    def chat(self, messages: Messages, **sampling: Any) -> str:
        return self.chat_batch([messages], **sampling)[0]

    def chat_batch(self, batch: list[Messages], **sampling: Any) -> list[str]:
        """Replies in order, ``batch_size`` conversations per ``generate`` call."""
        options = {**self.sampling, **sampling}
        replies: list[str] = []
        for start in range(0, len(batch), self.batch_size):
            replies.extend(self._generate(batch[start:start + self.batch_size], options))
        return replies

    def close(self) -> None:
        self.model = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, device={self.device!r})"

    # ------------------------------------------------------------------ helpers
    def _generate(self, batch: list[Messages], options: dict[str, Any]) -> list[str]:
        torch = self._torch
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                   for m in batch]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False).to(self.device)
        kwargs = self._generation_kwargs(options)
        if options.get("seed") is not None:
            torch.manual_seed(int(options["seed"]))
        try:
            with torch.no_grad():
                out = self.model.generate(**inputs, **kwargs)
        except Exception as exc:
            raise ChatBackendError(f"local generation with {self.model_name} failed: "
                                   f"{type(exc).__name__}: {exc}", kind="error") from exc
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [_cut_at_stop(text, options.get("stop")).strip() for text in texts]

    def _generation_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        temperature = float(options.get("temperature", 1.0))
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(options.get("max_tokens") or self.max_new_tokens),
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
            if options.get("top_p") is not None:
                kwargs["top_p"] = float(options["top_p"])
            if options.get("top_k") is not None:
                kwargs["top_k"] = int(options["top_k"])
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


def _cut_at_stop(text: str, stop: str | list[str] | None) -> str:
    """``text`` up to the first stop string."""
    if not stop:
        return text
    for s in [stop] if isinstance(stop, str) else stop:
        if s and s in text:
            text = text[: text.index(s)]
    return text
