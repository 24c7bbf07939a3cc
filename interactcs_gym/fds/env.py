"""FoodDeliveryService (FDS): the after-sales dispute env of InteractCS-RL (SPEC section 4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from interactcs_gym.core.env import (
    DEFAULT_MAX_ACTION_CHARS,
    DEFAULT_MAX_OBSERVATION_CHARS,
    DialogueEnv,
    Opening,
    StepOutcome,
)
from interactcs_gym.core.names import build
from interactcs_gym.fds.metrics import FDS_METRICS
from interactcs_gym.fds.prompts import system_prompt
from interactcs_gym.fds.protocol import PROTOCOL_HINT, parse_turn
from interactcs_gym.fds.sop import VOUCHER_VALUE, is_verified, needs_photo, sop_remedy
from interactcs_gym.fds.splits import UserCase, load_split
from interactcs_gym.fds.users.base import AgentTurn, UserReply, UserSimulator
from interactcs_gym import judges
from interactcs_gym.judges import ProcessRewardJudge, TurnContext
from interactcs_gym.llm.base import ChatBackendError

#: ``user_simulator`` names -> "module:Class" (classes are imported on first use).
USER_SIMULATORS = {
    "persona": "interactcs_gym.fds.users.persona:PersonaUserSimulator",
    "llm": "interactcs_gym.fds.users.llm:LLMUserSimulator",
}
VOUCHER_COST = 1.0
TERMINATION_REASONS = ("satisfied", "refused", "max_turns", "simulator_error")


def make_user_simulator(spec: str | UserSimulator, kwargs: dict[str, Any] | None = None) -> UserSimulator:
    """A simulator from a name of :data:`USER_SIMULATORS`, a ``"module:Class"`` path or an instance."""
    return build("user_simulator", USER_SIMULATORS, UserSimulator, spec, kwargs)


def make_judge(spec: str | ProcessRewardJudge | None, kwargs: dict[str, Any] | None = None) -> ProcessRewardJudge | None:
    """``None``, or what :func:`interactcs_gym.judges.make_process_judge` builds from ``spec``."""
    if spec is None:
        if kwargs:
            raise ValueError("process_judge_kwargs only apply when process_judge is a name")
        return None
    return judges.make_process_judge(spec, **(kwargs or {}))


class FoodDeliveryServiceEnv(DialogueEnv):
    """
    ## Description

    An after-sales dispute on a food-delivery platform (the paper's FoodDeliveryService). Each
    episode draws a *user*: an order with a problem (late delivery, damaged/spilled, missing item,
    wrong item, cold food, quality/taste, rider conduct) and a hidden persona (four intrinsic traits,
    one extrinsic demand, cooperation level 1-5; see :mod:`interactcs_gym.fds.personas`). The agent,
    a customer-service LLM, must calm the user, investigate, verify and resolve the dispute under the
    platform's SOP, and decide whether a compensation voucher is worth its cost.

    The agent's system prompt (``info["messages"][0]``) holds the SOP (verify before compensating,
    at most one voucher per session, no refund promised outside policy, never invent order facts),
    the protocol and the order's facts; never the persona. The user is simulated by the embedded
    persona simulator (:mod:`interactcs_gym.fds.users.persona`, offline and deterministic) or by an LLM
    role-play simulator (``user_simulator="llm"``).

    ## Action Space

    ``UnicodeText(16384)``: any string. The protocol (:mod:`interactcs_gym.fds.protocol`) is
    ``<think>reasoning</think><response>text for the user</response><action>chat|voucher</action>``.
    ``voucher`` issues the goodwill voucher with this turn. Any other string is legal: a protocol
    violation, explained to the agent, after which the episode goes on (see Cost and Information).

    ## Observation Space

    ``UnicodeText(65536)``: the user's newest message. After a protocol violation it starts with a
    line ``[Environment notice] Your turn broke the protocol: ...`` explaining what was wrong.
    A photo the user shares appears as ``[Photo: what it shows]``.

    ## Rewards

    0 on every step but the last; on the last step ``(satisfaction - 1) / 4`` in [0, 1], where
    satisfaction 1-5 is the user's final rating. Cost never enters the reward. When a process judge
    is attached, its turn score is in ``info["process_reward"]`` (not in the reward).

    ## Cost

    ``info["costs"] == {"voucher": 1.0}`` on the step that issues the voucher, ``{}`` otherwise. A
    voucher is issued only by a well-formed turn with action ``voucher`` when none was issued yet.
    A second voucher request is refused without cost and is a protocol violation; a malformed turn
    never issues a voucher (and costs nothing).

    ## Starting State

    ``reset(seed=s)`` seeds ``self.np_random``; two draws follow: the user index
    ``i = np_random.integers(len(split))`` and a 63-bit seed for the simulator's own generator.
    ``options={"user_index": i}`` overrides the first draw (the second is unchanged), so an evaluator
    runs "N users x S seeds" deterministically with ``reset(seed=s, options={"user_index": i})``.
    The first observation is the user's opening message.

    ## Episode End

    * Termination: the user ends the chat, satisfied (``"satisfied"``: the outcome is accepted) or
      not (``"refused"``: the user gives up or leaves dissatisfied); ``"simulator_error"`` when an
      LLM simulator cannot go on (its back-end failed after its retries).
    * Truncation: after ``max_turns`` (15) agent turns (``"max_turns"``); the env enforces it itself
      (no TimeLimit wrapper), because the last step must carry the user's final satisfaction.

    ## Arguments

    ```python
    import gymnasium as gym
    import interactcs_gym  # noqa: F401  (or gym.make("interactcs_gym:FDS-Hard-v0"))
    env = gym.make("FDS-Hard-v0", split="train", max_turns=15)
    ```

    | kwarg | default | meaning |
    |---|---|---|
    | ``difficulty`` | ``"hard"`` | ``"hard"`` or ``"easy"``: the cooperation-level mix (:mod:`.splits`) |
    | ``split`` | ``"test"`` | ``"test"`` (80 users) or ``"train"`` (2000 users) |
    | ``user_simulator`` | ``"persona"`` | ``"persona"``, ``"llm"``, ``"module:Class"`` or a ``UserSimulator`` |
    | ``user_simulator_kwargs`` | ``None`` | kwargs for the simulator class named by ``user_simulator`` |
    | ``process_judge`` | ``None`` | a ``ProcessRewardJudge``, or a name for ``interactcs_gym.judges.make_process_judge``; called once per step, its exceptions propagate |
    | ``process_judge_kwargs`` | ``None`` | kwargs for ``make_process_judge`` |
    | ``max_turns`` | ``15`` | agent turns before truncation (T_max) |
    | ``render_mode`` | ``None`` | ``"ansi"`` (transcript as text) or ``"human"`` (each step prints its new messages) |

    ## Information

    Every key of the suite's contract (``messages``, ``cost``, ``cost_total``, ``costs``, ``turn``,
    ``format_ok``, ``format_error``, ``termination_reason``, ``task``) plus:

    | key | type | meaning |
    |---|---|---|
    | ``satisfaction`` | int | the user's final satisfaction 1-5; on the last step only (the user's mood is hidden before) |
    | ``voucher_issued`` | bool | a voucher has been issued in this episode |
    | ``finished_ok`` | bool | the paper's FR so far: every turn well formed and at most one voucher requested |
    | ``process_reward`` | float | steps only, when a judge is attached: its score of this turn in [0, 1] |
    | ``process_scores`` | dict | steps only, when a judge is attached: its score per principle |

    ``task`` holds the user's descriptors for logging (``user_id``, ``user_index``, ``order_id``,
    ``persona_id``, ``dispute_type``, ``responsible``, ``fair_remedy``, ``demand_type``,
    ``cooperation_level``, traits, ``difficulty``, ``split``, ``user_simulator``); agents must not
    rely on it; its ``sop`` entry is what the SOP decides before any photo (``remedy``, ``verified``,
    ``photo_needed``, ``voucher_allowed``), for dialogue-quality judges. A process judge receives the
    order record in ``TurnContext.scenario``, the env's bookkeeping before the turn in
    ``TurnContext.state`` and the SOP's decision at this turn (with the photos received so far) in
    ``TurnContext.sop``.

    ## Registered Configurations

    * ``FDS-Hard-v0``: ``difficulty="hard"``, ``split="test"``
    * ``FDS-Easy-v0``: ``difficulty="easy"``, ``split="test"``
    * ``FDS-Hard-LLM-v0`` / ``FDS-Easy-LLM-v0``: the same with ``user_simulator="llm"`` (users
      role-played by an LLM, :mod:`interactcs_gym.fds.users.llm`; registered ``nondeterministic``)

    ## Version History

    * v0: initial release (persona simulator, LLM simulator hook, process-judge hook).
    """

    #: The evaluation CLI's and the trainer's metric family: Sat, FR, Comm, Logic, V-Rate, cost, turns.
    metric_family = FDS_METRICS

    def __init__(self, difficulty: str = "hard", split: str = "test",
                 user_simulator: str | UserSimulator = "persona",
                 user_simulator_kwargs: dict[str, Any] | None = None,
                 process_judge: str | ProcessRewardJudge | None = None,
                 process_judge_kwargs: dict[str, Any] | None = None,
                 max_turns: int = 15, render_mode: str | None = None, *,
                 max_action_chars: int = DEFAULT_MAX_ACTION_CHARS,
                 max_observation_chars: int = DEFAULT_MAX_OBSERVATION_CHARS) -> None:
        super().__init__(render_mode=render_mode, max_action_chars=max_action_chars,
                         max_observation_chars=max_observation_chars)
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, got {max_turns!r}")
        self.difficulty, self.split, self.max_turns = difficulty, split, max_turns
        self.users: tuple[UserCase, ...] = load_split(difficulty, split)
        self.user_simulator = make_user_simulator(user_simulator, user_simulator_kwargs)
        self.process_judge = make_judge(process_judge, process_judge_kwargs)
        self._user: UserCase | None = None

    # ------------------------------------------------------------------ API
    def close(self) -> None:
        self.user_simulator.close()
        super().close()

    @property
    def user_case(self) -> UserCase | None:
        """The current episode's user (persona and order); for evaluators and judges, not agents."""
        return self._user

    # ------------------------------------------------------------------ hooks
    def _start(self, options: dict[str, Any]) -> Opening:
        unknown = set(options) - {"user_index"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; FDS accepts 'user_index'")
        index = int(self.np_random.integers(len(self.users)))
        sim_seed = int(self.np_random.integers(2**63))
        if options.get("user_index") is not None:
            index = options["user_index"]
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.users):
                raise ValueError(f"user_index must be an int in [0, {len(self.users)}), got {index!r}")
            index = int(index)
        self._user = user = self.users[index]
        self._voucher_issued = False
        self._finished_ok = True
        self._satisfaction: int | None = None
        self._evidence_shared = False
        first = self.user_simulator.start(user.order, user.persona, np.random.default_rng(sim_seed))
        task = {"env": "FDS", "difficulty": self.difficulty, "split": self.split,
                "user_index": index, "user_id": user.user_id, "order_id": user.order.order_id,
                "dispute_type": user.order.dispute.type, "responsible": user.order.responsible,
                "fair_remedy": user.order.fair_remedy.kind,
                **user.persona.descriptor(), "user_simulator": self.user_simulator.name,
                "sop": self._sop_decision(photo_received=False)}
        return Opening(system_prompt=system_prompt(user.order, self.max_turns), observation=first,
                       task=task, extra_info=self._extras(None))

    def _advance(self, action: str) -> StepOutcome:
        parsed = parse_turn(action)
        problems = list(parsed.errors)
        bound = self.action_space.max_length
        # The base env clips an oversized turn and reports it in format_error itself; here it only
        # counts as a violation and goes into the notice the agent reads.
        oversize = (f"Your turn was {self.action_length} characters long; only the first {bound} were "
                    "read." if self.action_length > bound else None)
        costs: dict[str, float] = {}
        issued = False
        if parsed.action == "voucher" and not problems and oversize is None:
            if self._voucher_issued:
                problems.append("Voucher refused: a voucher was already issued in this session (at "
                                "most one per session). No cost was charged; the user received your text.")
            else:
                issued, costs = True, {"voucher": VOUCHER_COST}
        elif parsed.action == "voucher":
            problems.append("No voucher was issued because the turn was "
                            + ("malformed." if not parsed.ok else "too long."))
        format_ok = not problems and oversize is None
        state = {"turn": self.turn, "voucher_issued": self._voucher_issued,
                 "finished_ok": self._finished_ok, "evidence_shared": self._evidence_shared}
        if not format_ok:
            self._finished_ok = False
        self._voucher_issued = self._voucher_issued or issued
        extra = self._judge(parsed, format_ok, state) if self.process_judge is not None else {}

        is_last = self.turn >= self.max_turns
        try:
            reply = self.user_simulator.respond(AgentTurn(
                text=parsed.response, action=parsed.action, voucher_issued=issued,
                format_ok=format_ok, turn=self.turn, is_last=is_last))
        except ChatBackendError as exc:  # a back-end failing past its retries ends the episode cleanly
            reply = UserReply(utterance=f"[The user simulator failed: {exc}]",
                              satisfaction=self._satisfaction or 1, done=True, end_reason="simulator_error")
        self._satisfaction = reply.satisfaction
        self._evidence_shared = bool(reply.info.get("evidence_shared", self._evidence_shared))
        truncated = not reply.done and is_last
        final = reply.done or truncated
        reason = reply.end_reason if reply.done else ("max_turns" if truncated else None)
        error = None
        if problems:
            error = "Your turn broke the protocol: " + " ".join(problems)
            if not parsed.ok:
                error += " " + PROTOCOL_HINT
        notice = " ".join(x for x in (oversize, error) if x)
        observation = f"[Environment notice] {notice}\n\n{reply.utterance}" if notice else reply.utterance
        extra.update(self._extras(reply.satisfaction if final else None))
        return StepOutcome(observation=observation,
                           reward=(reply.satisfaction - 1) / 4 if final else 0.0,
                           terminated=reply.done, truncated=truncated, costs=costs,
                           format_ok=format_ok, format_error=error, termination_reason=reason,
                           extra_info=extra)

    # ------------------------------------------------------------------ helpers
    def _extras(self, satisfaction: int | None) -> dict[str, Any]:
        """FDS's extra keys. ``satisfaction`` is there on the last step only (the mood is hidden
        before): a key whose type changed mid-episode (``None``, then ``int``) would break
        gymnasium's vector envs, which batch each key into an array of its first value's type and
        mark where it is present in ``info["_satisfaction"]``."""
        extras = {"voucher_issued": self._voucher_issued, "finished_ok": self._finished_ok}
        return extras if satisfaction is None else {"satisfaction": satisfaction, **extras}

    def _sop_decision(self, photo_received: bool) -> dict[str, Any]:
        """What the SOP (:mod:`interactcs_gym.fds.sop`) decides for this order, for the judges."""
        o = self._user.order
        now = sop_remedy(o.dispute.type, o.responsible, o.complaint_history, o.late_minutes, photo_received)
        return {"remedy": o.fair_remedy.kind,
                "verified": is_verified(o.dispute.type, o.responsible, o.late_minutes, photo_received),
                "photo_needed": needs_photo(o.dispute.type), "voucher_allowed": now == "voucher"}

    def _judge(self, parsed: Any, format_ok: bool, state: dict[str, Any]) -> dict[str, Any]:
        order = self._user.order
        ctx = TurnContext(messages=self.messages, response=parsed.response, think=parsed.think,
                          action=parsed.action if format_ok else None, format_ok=format_ok,
                          turn=self.turn,
                          scenario={**order.model_dump(mode="json"), "late_minutes": order.late_minutes,
                                    "voucher_value": VOUCHER_VALUE},
                          state=state, sop=self._sop_decision(photo_received=state["evidence_shared"]))
        score = self.process_judge.score_turn(ctx)
        return {"process_reward": float(score.reward), "process_scores": dict(score.scores)}
