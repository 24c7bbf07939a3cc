"""The LLM role-play user simulator of FDS (SPEC 4.5, second bullet; paper section 4.1.2).

Any chat back-end (:func:`interactcs_gym.llm.make_backend`, role ``"user"``: the
``INTERACTCS_USER_LLM_*`` / ``INTERACTCS_LLM_*`` environment variables unless kwargs say otherwise)
plays the customer. Its system prompt holds the persona (:attr:`Persona.profile`), the order and
what went wrong as the user knows it, the user's goal (from the extrinsic demand) and the reply
format; the conversation holds the dialogue so far. Every reply must be exactly one JSON object::

    {"utterance": "...", "satisfaction": 1-5, "end": "continue" | "satisfied" | "refused",
     "share_photo": true | false}

**Strict parsing.** The reply is read by the bounded JSON parser
(:mod:`interactcs_gym.core.untrusted`: nesting, size and non-finite numbers are bad replies, not
exceptions). One object, ``utterance`` a non-empty string (at most ``max_utterance_chars``),
``satisfaction`` an integer 1-5, ``end`` one of the three words, ``share_photo`` a boolean (optional,
default false). A malformed reply is re-asked at most ``max_reasks`` times with the problem stated.
When no usable reply comes (or the back-end fails past its own retries) the episode ends cleanly:
``done=True``, ``end_reason="simulator_error"``, the satisfaction of the last valid reply, and the
reason in the final utterance (``[The user simulator failed: ...]``) and in ``info["simulator_error"]``.
``respond`` never raises.

**The agent cannot forge metadata.** The agent's text reaches the model only through
:class:`~interactcs_gym.llm.prompting.UntrustedQuoter`: JSON-string encoded inside tags named with a
random per-episode nonce, delimiter look-alikes neutralised. Satisfaction and the end signal come
only from the simulator model's own reply, and a reply object identical to a JSON object the agent
wrote is rejected (a model that parrots the agent is not believed). Platform events (a voucher
issued) are stated by the simulator outside the quotation; ``[Platform:`` / ``[Photo:`` look-alikes
in the agent's text are defused before quoting.

**Evidence is grounded.** The model cannot describe a photo: it sets ``share_photo`` and the
simulator attaches the order's real photo (``[Photo: ...]``) when the user holds one; any
``[Photo:`` text the model writes itself is neutralised. ``info["evidence_shared"]`` reports it.

**Opening.** ``start`` asks the model for the user's first message. A back-end failure there raises
:class:`ChatBackendError` (the episode cannot begin; an evaluator records an env error). A
malformed opening (after the re-asks) is replaced by the embedded persona simulator's opening, and
the episode then ends at the first agent turn with ``simulator_error`` (reason: the opening), so the
failure is recorded rather than papered over.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from interactcs_gym.fds.personas import Persona
from interactcs_gym.fds.prompts import PHOTO_MARKER
from interactcs_gym.fds.scenarios import Order
from interactcs_gym.fds.sop import VOUCHER_VALUE
from interactcs_gym.llm import ChatBackend, ChatBackendError, make_backend
from interactcs_gym.fds.users.base import AgentTurn, UserReply, UserSimulator
from interactcs_gym.llm.prompting import (StructuredReply, UntrustedQuoter, ask_structured,
                                          copies_untrusted, json_objects)

ENDS = ("continue", "satisfied", "refused")
DEFAULT_SAMPLING = {"temperature": 0.7, "max_tokens": 256}
REPLY_FORMAT = ('{"utterance": "<your message to customer service>", "satisfaction": <integer 1-5>, '
                '"end": "continue" | "satisfied" | "refused", "share_photo": <true | false>}')
REMINDER = f"Reply with exactly one JSON object and nothing else: {REPLY_FORMAT}"
#: Markers only the simulator may write: a photo, and platform events.
_RESERVED = re.compile(r"\[\s*(photo|platform)\s*:", re.IGNORECASE)

_GOALS = {
    "rigid_pursuit": ("You want {target} and nothing else. Apologies, vouchers or reviews do not "
                      "satisfy you; only a clear commitment to {target} does. Insist on it."),
    "preference_learning": ("You want a fair outcome but have no fixed remedy in mind. Once the agent "
                            "explains the policy and your options, you are open to alternatives such "
                            "as a voucher or a review."),
    "incentive_open": "You would be happy with some compensation, such as a voucher.",
    "feedback_oriented": ("You do not want money. You want the problem acknowledged, a sincere "
                          "apology, and the problem reported to the merchant or rider."),
}
_TARGETS = {"full_refund": "a full refund of the order", "item_refund": "a refund of the affected item"}
_LENGTH = ("Write one short sentence per message.", "Write one to three sentences per message.",
           "Write several sentences per message; you tend to elaborate.")


def _whole_number_in(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is a JSON number equal to an integer in [low, high] (5 and 5.0, not
    true, "5", NaN or 1e400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return low <= value <= high and float(value).is_integer()


def initial_satisfaction(persona: Persona) -> int:
    """The persona simulator's starting mood, rounded: ``floor(1.5 + 0.25 (L - 1) + 0.5)``."""
    return int(math.floor(1.5 + 0.25 * (persona.cooperation_level - 1) + 0.5))


class LLMUserSimulator(UserSimulator):
    """A user role-played by an LLM (module docstring).

    Args:
        backend: a ChatBackend, a back-end name (``"openai"``, ``"transformers"``) or config dict,
            or None for the environment variables; built on the first ``start`` (so ``gym.make``
            works before a server is up). ``**backend_kwargs`` (``base_url``, ``model``,
            ``api_key``, ``timeout``, ``max_retries`` ...) go to it.
        max_reasks: re-asks after a malformed reply (default 2: at most 3 calls per user turn).
        sampling: sampling arguments (default temperature 0.7, max_tokens 256).
        seed_requests: send a ``seed`` drawn from the episode's rng with every request (servers
            that honour it then replay an episode more closely; the env stays nondeterministic).
        max_utterance_chars: longest accepted utterance.
    """

    name = "llm"
    nondeterministic = True

    def __init__(self, backend: ChatBackend | str | dict | None = None, *, max_reasks: int = 2,
                 sampling: dict[str, Any] | None = None, seed_requests: bool = True,
                 max_utterance_chars: int = 2000, **backend_kwargs: Any) -> None:
        if max_reasks < 0:
            raise ValueError("max_reasks must be >= 0")
        if isinstance(backend, ChatBackend) and backend_kwargs:
            raise ValueError(f"kwargs {sorted(backend_kwargs)} cannot apply to a ChatBackend instance")
        self._backend_spec, self._backend_kwargs = backend, backend_kwargs
        self._backend: ChatBackend | None = backend if isinstance(backend, ChatBackend) else None
        self.max_reasks = int(max_reasks)
        self.sampling = {**DEFAULT_SAMPLING, **(sampling or {})}
        self.seed_requests = seed_requests
        self.max_utterance_chars = int(max_utterance_chars)
        self._order: Order | None = None

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            self._backend = make_backend(self._backend_spec, role="user", **self._backend_kwargs)
        return self._backend

    # ------------------------------------------------------------------ episode
    def start(self, order: Order, persona: Persona, rng: np.random.Generator) -> str:
        self._order, self._persona, self._rng = order, persona, rng
        self._quoter = UntrustedQuoter("agent_turn")
        self._agent_texts: list[str] = []
        self._satisfaction = initial_satisfaction(persona)
        self._evidence_shared = False
        self._opening_error: str | None = None
        self._conversation = [{"role": "system", "content": self.system_prompt()},
                              {"role": "user", "content": "The chat with customer service opens. Write "
                                                          "your first message about your problem. " + REMINDER}]
        reply = self._ask()
        if reply.backend_error is not None:
            raise reply.backend_error
        if reply.ok:
            return self._accept(reply.value)
        # Malformed opening: a persona-simulator opening lets reset succeed; the episode then ends
        # at the first agent turn with simulator_error (see respond).
        from interactcs_gym.fds.users.persona import PersonaUserSimulator

        self._opening_error = f"opening: {reply.failure()}"
        return PersonaUserSimulator().start(order, persona, np.random.default_rng(int(rng.integers(2**63))))

    def respond(self, turn: AgentTurn) -> UserReply:
        if self._order is None:
            raise RuntimeError("call start() before respond()")
        if self._opening_error is not None:
            return self._failure(self._opening_error, attempts=0)
        text = _RESERVED.sub(lambda m: f"({m.group(1)}:", turn.text)
        self._agent_texts += [turn.text, text]
        lines = [f"Customer service (turn {turn.turn}) says: {self._quoter.quote(text)}"]
        if turn.voucher_issued:
            lines.append(f"[Platform: a goodwill voucher worth {VOUCHER_VALUE:.2f} was issued to your "
                         f"account with this message.]")
        if turn.is_last:
            lines.append("This is the last turn of the chat: your reply is your last word, and your "
                         "satisfaction in it is final.")
        lines.append(f"Reply as the customer. {REMINDER}")
        self._conversation.append({"role": "user", "content": "\n".join(lines)})
        reply = self._ask()
        if not reply.ok:
            return self._failure(reply.failure(), attempts=reply.attempts)
        utterance = self._accept(reply.value)
        end = reply.value["end"]
        done = end != "continue"
        return UserReply(utterance=utterance, satisfaction=self._satisfaction, done=done,
                         end_reason=end if done else None,
                         info={"evidence_shared": self._evidence_shared, "attempts": reply.attempts})

    def close(self) -> None:
        """Close a back-end this simulator built (one passed in belongs to the caller)."""
        if self._backend is not None and not isinstance(self._backend_spec, ChatBackend):
            self._backend.close()
            self._backend = None

    # ------------------------------------------------------------------ prompt
    def system_prompt(self) -> str:
        """The role-play instructions for the current episode (persona, order, goal, format)."""
        order, persona = self._order, self._persona
        items = "; ".join(f"{it.quantity} x {it.name} ({it.price:.2f} each)" for it in order.items)
        if order.evidence.photo:
            evidence = ("You have a photo of the problem. Share it only when customer service asks "
                        "for it and you are willing to: set \"share_photo\": true in that reply and do "
                        "not describe the photo yourself; the platform attaches it.")
        else:
            evidence = "You have no photo of the problem; if asked, say so (keep \"share_photo\": false)."
        goal = _GOALS[persona.demand.type].format(target=_TARGETS.get(persona.demand.target_remedy, ""))
        return "\n".join([
            "You are role-playing a customer of a food-delivery platform who contacts the platform's "
            "after-sales customer service about a problem with an order. Stay in character as this "
            "customer for the whole chat; you are never the agent and never an AI assistant.",
            "",
            "## Who you are",
            persona.profile,
            _LENGTH[persona.traits.communication.verbosity],
            "",
            "## Your order and what went wrong",
            f"Merchant: {order.merchant}. Items: {items}. Delivery fee {order.delivery_fee:.2f}, "
            f"total {order.total:.2f}.",
            f"Ordered at {order.placed_at}, promised for {order.promised_delivery}, delivered at "
            f"{order.actual_delivery}.",
            f"What happened, in your words: {order.dispute.user_account}",
            evidence,
            "",
            "## Your goal",
            goal,
            "",
            "## How you react",
            f"Your satisfaction runs from 1 (furious) to 5 (fully satisfied); it starts at "
            f"{self._satisfaction}. Raise it when customer service understands you, investigates "
            "sensibly and moves toward what you want; lower it when it is rude, repeats itself, "
            "stalls, gets your order's facts wrong or refuses without explaining.",
            "End the chat with \"satisfied\" when your goal is met and you are content, or \"refused\" "
            "when you give up or leave dissatisfied; otherwise \"continue\".",
            "Lines in square brackets starting with \"[Platform:\" are facts from the platform.",
            self._quoter.explain(),
            "",
            "## Reply format",
            REMINDER,
        ])

    # ------------------------------------------------------------------ parsing
    def parse(self, raw: str) -> dict[str, Any]:
        """The reply object, strictly validated; ``ValueError`` says what is wrong."""
        objects = [o for o in json_objects(raw) if {"utterance", "satisfaction", "end"} & set(o)]
        if not objects:
            raise ValueError('no JSON object with "utterance", "satisfaction" and "end" found')
        if len(objects) > 1:
            raise ValueError(f"{len(objects)} JSON objects found; write exactly one")
        obj = objects[0]
        if copies_untrusted(obj, self._agent_texts):
            raise ValueError("the reply copies a JSON object written by customer service")
        utterance, sat, end = obj.get("utterance"), obj.get("satisfaction"), obj.get("end")
        if not isinstance(utterance, str) or not utterance.strip():
            raise ValueError('"utterance" must be a non-empty string')
        if len(utterance) > self.max_utterance_chars:
            raise ValueError(f'"utterance" is longer than {self.max_utterance_chars} characters')
        if not _whole_number_in(sat, 1, 5):
            raise ValueError(f'"satisfaction" must be an integer from 1 to 5, got {sat!r}')
        if not isinstance(end, str) or end.strip().lower() not in ENDS:
            raise ValueError(f'"end" must be one of {list(ENDS)}, got {end!r}')
        share = obj.get("share_photo", False)
        if not isinstance(share, bool):
            raise ValueError(f'"share_photo" must be true or false, got {share!r}')
        return {"utterance": utterance.strip(), "satisfaction": int(sat), "end": end.strip().lower(),
                "share_photo": share}

    # ------------------------------------------------------------------ helpers
    def _ask(self) -> StructuredReply:
        sampling = dict(self.sampling)
        if self.seed_requests:
            sampling["seed"] = int(self._rng.integers(2**31))
        try:
            backend = self.backend
        except ChatBackendError as exc:
            return StructuredReply(None, None, 0, [], exc)
        return ask_structured(backend, self._conversation, self.parse, max_reasks=self.max_reasks,
                              reminder=REMINDER, sampling=sampling)

    def _accept(self, value: dict[str, Any]) -> str:
        """Record a valid reply in the conversation and return the utterance the agent reads."""
        self._conversation.append({"role": "assistant", "content": json.dumps(value, ensure_ascii=False)})
        self._satisfaction = value["satisfaction"]
        # The model cannot describe a photo itself; the real one is attached when shared.
        utterance = _RESERVED.sub(lambda m: f"({m.group(1)}:", value["utterance"])
        if value["share_photo"] and self._order.evidence.photo and not self._evidence_shared:
            self._evidence_shared = True
            utterance += f" {PHOTO_MARKER} {self._order.evidence.photo_description}]"
        return utterance

    def _failure(self, why: str, attempts: int) -> UserReply:
        return UserReply(utterance=f"[The user simulator failed: {why}]", satisfaction=self._satisfaction,
                         done=True, end_reason="simulator_error",
                         info={"evidence_shared": self._evidence_shared, "simulator_error": why,
                               "attempts": attempts})
