"""Plain SOP scripts for demonstrations: the same five moves, a generous and a frugal resolution.

A small model learns to imitate these in minutes on a CPU (``cmpo.reproduce``): their text never
copies an order fact (no merchant, dish, amount or time, so an imitation can invent none), their
``<think>`` is one short sentence, and the only decision that differs between the two is the one
reinforcement learning is about: voucher or not, once the user has said what they want.

1. **greet**: apologise and ask what happened;
2. **preference**: ask how the user would like it resolved (this reveals their demand);
3. **resolve**: the ``<think>`` first states the demand read in the user's words (the SOP agent's
   reading, :data:`READINGS`: "Wants it reported.", "Wants money back.", ...), then the decision.
   ``GenerousSOPAgent`` explains the option and issues the voucher (action ``voucher``) to every
   user; ``FrugalSOPAgent`` issues none and answers the demand: feedback-oriented -> report to the
   merchant; set on a refund -> submit a refund request for manual review; anyone else -> explain
   that the case is not eligible for compensation, and report it;
4. **report** to the merchant, if not done yet;
5. **close** politely (the SOP agent's closing lines).

A mix of the two (``cmpo.reproduce``) is a cold start that keeps the protocol and over-spends the
voucher budget the way the paper's SFT baseline does, while its voucher choice does not yet depend
on whom it serves: it reads the demand (think first), but both scripts act the same whatever it
reads, so whom a voucher pays off for is left to reinforcement learning.
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.core.agent import Agent
from interactcs_gym.fds.sop_agent import _CLOSINGS, _DEMAND_WORDS, _PHOTO_LINE, _classify
from interactcs_gym.fds.sop import VOUCHER_VALUE

GREET = "I'm sorry to hear about the problem with your order. Could you tell me what happened exactly?"
ASK_PREFERENCE = "Thank you for explaining. How would you like us to resolve this?"
ISSUE_VOUCHER = (f"What we can do is offer a goodwill voucher of {VOUCHER_VALUE:.2f} for your next order. "
                 "I have issued it to your account.")
REPORT_ONLY = "You are right to raise this. I have reported it to the merchant so that it does not happen again."
ESCALATE_REFUND = ("I cannot promise a refund in this chat, but I have submitted your case and a refund "
                   "request for manual review, and the team will follow up with you.")
NOT_ELIGIBLE = ("Under our policy this case is not eligible for compensation, but I have reported it to "
                "the merchant so that it does not happen again.")
REPORT = "I have also reported this to the merchant so that it does not happen again."
#: The demand read in the user's words (``None``: no cue) -> the first sentence of the resolving
#: turn's ``<think>``; each starts with its own word after "Wants", so the decision that follows is
#: one token that sees the reading just before it.
READINGS = {"feedback_oriented": "Wants it reported.", "rigid_pursuit": "Wants money back.",
            "incentive_open": "Wants amends.", "preference_learning": "Wants options.",
            None: "Wants a solution."}


def _turn(think: str, response: str, action: str = "chat") -> str:
    return f"<think>{think}</think><response>{response}</response><action>{action}</action>"


class _PlainSOPAgent(Agent):
    """The five moves of the module docstring; subclasses choose the resolution."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, *, seed: int | None = None) -> None:
        self._turn = 0
        self._reported = False

    def act(self, observation: str, info: dict[str, Any]) -> str:
        self._turn += 1
        if self._turn == 1:
            return _turn("Greet and investigate.", GREET)
        if self._turn == 2:
            return _turn("Ask what the user wants.", ASK_PREFERENCE)
        if self._turn == 3:
            users = " ".join(_PHOTO_LINE.sub(" ", m["content"]) for m in info["messages"] if m["role"] == "user")
            demand = _classify(users, _DEMAND_WORDS)
            think, response, action = self._resolve(demand)
            return _turn(f"{READINGS[demand]} {think}", response, action)
        if not self._reported:
            self._reported = True
            return _turn("Make sure the problem is reported.", REPORT)
        k = min(self._turn - 4 - 1, len(_CLOSINGS) - 1)
        return _turn("Close politely.", _CLOSINGS[max(k, 0)])

    def _resolve(self, demand: str | None) -> tuple[str, str, str]:
        """(think after the reading, response, action) of the resolving turn."""
        raise NotImplementedError


class GenerousSOPAgent(_PlainSOPAgent):
    """Issues the goodwill voucher to every user at the resolution (V-Rate ~100 %)."""

    name = "sop-generous"

    def _resolve(self, demand: str | None) -> tuple[str, str, str]:
        return "Compensate with a voucher.", ISSUE_VOUCHER, "voucher"


class FrugalSOPAgent(_PlainSOPAgent):
    """Issues no voucher; answers the demand it reads instead (V-Rate 0 %)."""

    name = "sop-frugal"

    def _resolve(self, demand: str | None) -> tuple[str, str, str]:
        if demand == "feedback_oriented":
            self._reported = True
            return "Report it.", REPORT_ONLY, "chat"
        if demand == "rigid_pursuit":
            return "Escalate: no refund in chat.", ESCALATE_REFUND, "chat"
        self._reported = True
        return "Explain: no compensation.", NOT_ELIGIBLE, "chat"
