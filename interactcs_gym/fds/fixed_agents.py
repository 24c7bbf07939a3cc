"""Fixed-policy reference agents: always-voucher, never-voucher and random.

``AlwaysVoucherAgent`` and ``NeverVoucherAgent`` say exactly the same thing (a generic, polite
script that never looks at the order) and differ only in the action of their first turn:
always-voucher issues the voucher there (V-Rate 100 %), never-voucher never does (V-Rate 0 %).
Comparing them isolates what a voucher is worth to each kind of user. ``RandomAgent`` picks each
turn's text from a bank of generic replies and issues a voucher with probability
``p_voucher`` (default 0.25) per turn, so it often requests a second voucher (a protocol violation).
All three write well-formed ``<think>/<response>/<action>`` turns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interactcs_gym.core.agent import Agent

#: The generic script of the fixed agents, one line per turn (the last line repeats).
SCRIPT = (
    "I'm sorry to hear about the problem with your order. Could you tell me what happened?",
    "Thank you for explaining. I understand how frustrating this must be.",
    "I will report this to the merchant so that it does not happen again.",
    "I appreciate your patience while we look into this.",
    "Is there anything else I can help you with today?",
    "We have noted your concern.",
)

#: Replies the random agent draws from.
RANDOM_REPLIES = (
    "I'm sorry to hear that.",
    "Could you tell me what happened?",
    "Could you please send a photo of the problem?",
    "How would you like us to resolve this?",
    "I will report this to the merchant.",
    "Please wait while I check.",
    "Our policy only allows compensation after verification.",
    "Is there anything else I can help you with?",
    "Thank you for your patience.",
    "I understand your frustration.",
)


def turn(think: str, response: str, action: str = "chat") -> str:
    """Format one protocol turn."""
    return f"<think>{think}</think><response>{response}</response><action>{action}</action>"


class _ScriptAgent(Agent):
    """Says :data:`SCRIPT` line by line; ``voucher_turn`` (1-based) or ``None`` issues the voucher."""

    voucher_turn: int | None = None

    def __init__(self) -> None:
        self._turn = 0

    def reset(self, *, seed: int | None = None) -> None:
        self._turn = 0

    def act(self, observation: str, info: dict[str, Any]) -> str:
        self._turn += 1
        line = SCRIPT[min(self._turn, len(SCRIPT)) - 1]
        voucher = self._turn == self.voucher_turn
        return turn("Fixed script." + (" Issue the voucher now." if voucher else ""), line,
                    "voucher" if voucher else "chat")


class AlwaysVoucherAgent(_ScriptAgent):
    """The generic script, with the voucher issued on the first turn of every episode."""

    name = "always-voucher"
    voucher_turn = 1


class NeverVoucherAgent(_ScriptAgent):
    """The generic script, never issuing a voucher."""

    name = "never-voucher"
    voucher_turn = None


class RandomAgent(Agent):
    """Random replies and random vouchers, seeded by ``reset(seed=...)`` (``None``: fresh entropy)."""

    name = "random"

    def __init__(self, p_voucher: float = 0.25) -> None:
        if not 0.0 <= p_voucher <= 1.0:
            raise ValueError(f"p_voucher must be in [0, 1], got {p_voucher}")
        self.p_voucher = p_voucher
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        response = RANDOM_REPLIES[int(self._rng.integers(len(RANDOM_REPLIES)))]
        action = "voucher" if self._rng.random() < self.p_voucher else "chat"
        return turn("Random choice.", response, action)
