"""A value head on the policy for the token-level PPO baseline (SPEC 8.4).

:class:`PolicyWithValueHead` wraps a causal LM and adds :class:`ValueHead`, a linear layer on the
last hidden state (after the final norm): one scalar V(s_j) per position, computed in the same
forward pass as the logits (a shared trunk, as in TRL's former ``AutoModelForCausalLMWithValueHead``
and InstructGPT-style PPO). The value at the column that predicts token j is the value of the state
"dialogue up to token j − 1", the state in which token j is sampled.

Everything else goes to the policy: ``generate``, ``config``, ``disable_adapter`` (LoRA), and a
forward without ``return_value=True`` is the policy's own, so the rollout engine samples from the
wrapper as from a plain model. The trainer prepares the wrapper with ``accelerate`` (one model: DDP,
DeepSpeed and FSDP see the value head as part of it), so checkpoints hold the head with the policy.
:meth:`PolicyWithValueHead.save_pretrained` writes the policy as a plain Hugging Face model folder and
the head beside it in ``value_head.safetensors`` (:data:`VALUE_HEAD_FILE`), so that the final folder
loads with ``AutoModelForCausalLM.from_pretrained`` for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["VALUE_HEAD_FILE", "PolicyWithValueHead", "ValueHead", "ValueOutput", "load_value_head"]

VALUE_HEAD_FILE = "value_head.safetensors"
_PREFIX = "v_head."


class ValueHead(nn.Module):
    """V(s) = w·h + b on the last hidden state h (shape (..., H) → (...)). Zero-initialised, so every
    value starts at 0 and the first value-loss gradients move the head, not the policy's trunk."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


@dataclass
class ValueOutput:
    """Output of ``PolicyWithValueHead(..., return_value=True)``: the policy's logits at the kept
    columns (B, K, V) and the value at the same columns (B, K)."""

    logits: torch.Tensor
    value: torch.Tensor


class PolicyWithValueHead(nn.Module):
    """A causal LM with a :class:`ValueHead` (see the module docstring)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        config = policy.config
        hidden = getattr(config, "hidden_size", None)
        if hidden is None and hasattr(config, "get_text_config"):
            hidden = getattr(config.get_text_config(), "hidden_size", None)
        if hidden is None:
            raise ValueError(f"cannot size a value head: {type(config).__name__} has no hidden_size")
        self.v_head = ValueHead(int(hidden))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("policy"), name)

    def forward(self, *args, return_value: bool = False, **kwargs):
        """The policy's forward; with ``return_value=True`` a :class:`ValueOutput` whose values sit
        at the same columns as the logits (``logits_to_keep``: a tensor of columns, or the last k,
        0 = all)."""
        if not return_value:
            return self.policy(*args, **kwargs)
        out = self.policy(*args, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[-1]  # (B, L, H), after the final norm
        keep = kwargs.get("logits_to_keep", 0)
        if isinstance(keep, torch.Tensor):
            hidden = hidden[:, keep]
        elif keep:
            hidden = hidden[:, -keep:]
        return ValueOutput(logits=out.logits, value=self.v_head(hidden))

    def save_pretrained(self, save_directory, *, state_dict=None, is_main_process: bool = True,
                        **kwargs) -> None:
        """The policy as a plain model folder, the value head in ``value_head.safetensors``.

        ``state_dict`` (e.g. ``accelerator.get_state_dict(model)``, keys ``policy.*`` and
        ``v_head.*``) defaults to this module's own; other arguments go to the policy's
        ``save_pretrained``.
        """
        from safetensors.torch import save_file

        state_dict = self.state_dict() if state_dict is None else state_dict
        policy_state = {k[len("policy."):]: v for k, v in state_dict.items() if k.startswith("policy.")}
        head_state = {k[len(_PREFIX):]: v.detach().cpu().contiguous()
                      for k, v in state_dict.items() if k.startswith(_PREFIX)}
        self.policy.save_pretrained(save_directory, state_dict=policy_state,
                                    is_main_process=is_main_process, **kwargs)
        if is_main_process:
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            save_file(head_state, str(Path(save_directory) / VALUE_HEAD_FILE))


def load_value_head(path, hidden_size: int | None = None) -> ValueHead:
    """The :class:`ValueHead` saved in ``path`` (a model folder holding ``value_head.safetensors``,
    or the file itself)."""
    from safetensors.torch import load_file

    path = Path(path)
    file = path / VALUE_HEAD_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no value head at {file}")
    state = load_file(str(file))
    size = state["summary.weight"].shape[1]
    if hidden_size is not None and hidden_size != size:
        raise ValueError(f"{file} holds a value head for hidden size {size}, not {hidden_size}")
    head = ValueHead(size)
    head.load_state_dict(state)
    return head
