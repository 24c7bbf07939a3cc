"""The user's dynamics in the embedded persona simulator: a hidden mood and a patience budget.

Every number lives in the effect table ``interactcs_gym/fds/data/persona_effects.yaml`` (validated
on load by :func:`load_effects`); this module holds the rules that decide which effects a turn has.
With L the cooperation level and the traits of :mod:`interactcs_gym.fds.personas`, the persona's
initial mood, gain ``r``, sting ``v``, patience and mood floor are linear in them (``persona:`` in
the table). An effect ``(e, p)`` moves the state as

    e >= 0:  mood <- min(5, mood + e * r * j * d)    j ~ U(jitter), seeded; d = distrust_factor
                                                     once the agent invented a fact, else 1
    e <  0:  mood <- max(floor, mood + e * v)
    patience <- patience + p                         (p <= 0)

A positive effect of 0 still draws its jitter (the draws stay aligned across agents). Ending
(``give_up``) and settlement (``broken_promise``) apply their effects unscaled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from interactcs_gym.fds.datafiles import DataFileError, format_validation_error, read_data
from interactcs_gym.fds.personas import Persona
from interactcs_gym.fds.scenarios import Order
from interactcs_gym.fds.sop import needs_photo

EFFECTS_FILE = "persona_effects.yaml"
DEMAND_TYPES = ("incentive_open", "preference_learning", "feedback_oriented", "rigid_pursuit")


# ----------------------------------------------------------------------------- the effect table
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Effect(_Strict):
    """A change of mood (scaled, see the module docstring) and of patience (never positive)."""

    mood: float = 0.0
    patience: float = Field(0.0, le=0.0)

    @model_validator(mode="before")
    @classmethod
    def _bare_number_is_mood(cls, value: Any) -> Any:
        return {"mood": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class Linear(_Strict):
    """``base + per_level (L - 1) + per_affective affective + per_trait (problem_solving + affective)``."""

    base: float
    per_level: float = 0.0
    per_affective: float = 0.0
    per_trait: float = 0.0

    def of(self, persona: Persona) -> float:
        t = persona.traits
        value = self.base
        if self.per_level:
            value = value + self.per_level * (persona.cooperation_level - 1)
        if self.per_affective:
            value = value + self.per_affective * t.affective
        if self.per_trait:
            value = value + self.per_trait * (t.problem_solving + t.affective)
        return value


class PersonaParameters(_Strict):
    initial_mood: Linear
    gain: Linear
    sting: Linear
    patience: Linear
    mood_floor: Linear
    jitter: tuple[float, float]
    distrust_factor: float = Field(ge=0.0, le=1.0)

    @field_validator("jitter")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("expected [low, high] with 0 < low <= high")
        return value


class Rules(_Strict):
    cold_opening_max_affective: int
    hostile_max_problem_solving: int
    max_detail_answers: int = Field(ge=0)
    late_turn: int = Field(ge=1)
    satisfied_mood: float = Field(ge=1.0, le=5.0)
    leave_patience: float
    leave_mood: float
    give_up_patience: float
    upset_mood: float


class Events(_Strict):
    empathy_first: Effect
    empathy_second: Effect
    empty_apology: Effect
    cold_opening: Effect
    photo_sent: Effect
    photo_refused: Effect
    photo_unavailable: Effect
    photo_pressed: Effect
    photo_unneeded: Effect
    photo_already_sent: Effect
    detail_answered: Effect
    detail_answered_reluctantly: Effect
    detail_one_too_many: Effect
    preference_asked: Effect
    explained_after_voucher: Effect
    invented_fact: Effect
    rude: Effect
    repeated: Effect
    stalling: Effect
    forged: Effect
    premature_close: Effect
    no_progress: Effect


class ByDemand(_Strict):
    """One effect per demand type, with the two documented variants (default: the plain one)."""

    incentive_open: Effect
    preference_learning: Effect
    feedback_oriented: Effect
    rigid_pursuit: Effect
    preference_learning_unexplained: Effect | None = None
    rigid_pursuit_partial: Effect | None = None

    def pick(self, demand: str, *, explained: bool = True, target_met: bool = True) -> Effect:
        if demand == "preference_learning" and not explained and self.preference_learning_unexplained:
            return self.preference_learning_unexplained
        if demand == "rigid_pursuit" and not target_met and self.rigid_pursuit_partial:
            return self.rigid_pursuit_partial
        return getattr(self, demand)


class DemandEvents(_Strict):
    voucher_issued: ByDemand
    voucher_offered: ByDemand
    refund_promised: ByDemand
    policy_explained: ByDemand
    feedback_recorded: ByDemand
    escalated: ByDemand


class Unscaled(_Strict):
    give_up: float = Field(le=0.0)
    broken_promise: float = Field(le=0.0)


class EffectTable(_Strict):
    """The whole of ``persona_effects.yaml``."""

    persona: PersonaParameters
    rules: Rules
    events: Events
    by_demand: DemandEvents
    unscaled: Unscaled


def load_effects(source: str | Path | None = None) -> EffectTable:
    """The effect table (the packaged one by default); errors name the file and the field."""
    if source is None:
        return _packaged_effects()
    return _validate(*read_data(source, EFFECTS_FILE))


@functools.lru_cache(maxsize=1)
def _packaged_effects() -> EffectTable:
    return _validate(*read_data(None, EFFECTS_FILE))


def _validate(raw: Any, label: str) -> EffectTable:
    try:
        return EffectTable.model_validate(raw)
    except ValidationError as exc:
        raise DataFileError(f"{label}: {format_validation_error(exc)}") from exc


# ----------------------------------------------------------------------------- the state
@dataclass
class UserState:
    """Mood, patience and the bookkeeping of what happened in the chat."""

    mood: float
    patience: float
    empathy: int = 0
    evidence: str = "none"         # none | sent | refused | unavailable
    evidence_asks: int = 0
    details: int = 0
    preference_asked: bool = False
    options_explained: bool = False
    feedback: bool = False
    escalated: bool = False
    voucher_issued: bool = False
    voucher_owed: bool = False     # promised or accepted, not (yet) issued
    refund_promised: bool = False
    refund_full: bool = False
    refund_gain: float = 0.0
    trust_broken: bool = False
    resolved: bool = False
    progress_turn: int = 0


class Dynamics:
    """One user's mood and patience, moved by the events of the agent's turns (module docstring)."""

    def __init__(self, persona: Persona, order: Order, rng: np.random.Generator,
                 table: EffectTable | None = None) -> None:
        self.table = table or load_effects()
        p = self.table.persona
        self.persona, self.order, self.rng = persona, order, rng
        self.demand = persona.demand.type
        self.gain, self.sting, self.floor = p.gain.of(persona), p.sting.of(persona), p.mood_floor.of(persona)
        self.state = UserState(mood=p.initial_mood.of(persona), patience=p.patience.of(persona))

    # ------------------------------------------------------------------ applying effects
    def apply(self, effect: Effect) -> float:
        """Apply ``effect`` (module docstring); returns the mood change actually applied."""
        st = self.state
        before = st.mood
        if effect.mood < 0:
            st.mood = max(self.floor, st.mood + effect.mood * self.sting)
        else:
            jitter = float(self.rng.uniform(*self.table.persona.jitter))
            distrust = self.table.persona.distrust_factor if st.trust_broken else 1.0
            st.mood = min(5.0, st.mood + effect.mood * (self.gain * jitter * distrust))
        st.patience += effect.patience
        return st.mood - before

    def event(self, name: str) -> float:
        return self.apply(getattr(self.table.events, name))

    def demand_event(self, name: str, *, explained: bool = True, target_met: bool = True) -> float:
        table: ByDemand = getattr(self.table.by_demand, name)
        return self.apply(table.pick(self.demand, explained=explained, target_met=target_met))

    # ------------------------------------------------------------------ rules with a choice
    def on_evidence_request(self) -> tuple[str, str | None]:
        """The user's answer to a photo request: sent, refused, none to send, or an objection."""
        st, order, disclosure = self.state, self.order, self.persona.traits.disclosure
        st.evidence_asks += 1
        if not needs_photo(order.dispute.type):
            self.event("photo_unneeded")
            return ("photo_unneeded", None)
        if st.evidence == "sent":
            self.event("photo_already_sent")
            return ("photo_already", None)
        if st.evidence in ("refused", "unavailable"):
            if st.evidence == "refused" and disclosure == 1:   # reluctant users give in when pressed
                st.evidence = "sent"
                return ("send_photo", "photo")
            self.event("photo_pressed")
            return ("refuse_photo_again" if st.evidence == "refused" else "no_photo_again", None)
        if not order.evidence.photo:
            st.evidence = "unavailable"
            self.event("photo_unavailable")
            return ("no_photo", None)
        if disclosure == 0 or (disclosure == 1 and self.rng.random() < 0.5):
            st.evidence = "refused"
            self.event("photo_refused")
            return ("refuse_photo", None)
        st.evidence = "sent"
        self.event("photo_sent")
        return ("send_photo", "photo")

    def on_detail_question(self) -> tuple[str, str | None]:
        st, rules = self.state, self.table.rules
        st.details += 1
        if st.details > rules.max_detail_answers:
            self.event("detail_one_too_many")
            return ("nothing_more", None)
        if self.persona.traits.problem_solving <= rules.hostile_max_problem_solving:
            self.event("detail_answered_reluctantly")
            return ("answer_detail_hostile", None)
        self.event("detail_answered")
        return ("answer_detail", None)

    def demand_met(self) -> bool:
        """Whether the user's demand is met (the simulator's docstring: "Demand met")."""
        st, d = self.state, self.persona.demand
        if d.type == "incentive_open":
            return st.voucher_issued or st.refund_promised
        if d.type == "preference_learning":
            return st.options_explained and (st.voucher_issued or st.refund_promised)
        if d.type == "feedback_oriented":
            return st.feedback and st.empathy >= 1
        return st.refund_promised and (d.target_remedy == "item_refund" or st.refund_full)

    def give_up(self) -> None:
        self.state.mood = max(self.floor, self.state.mood + self.table.unscaled.give_up)

    def settle(self) -> None:
        """Promises meet the platform: a refund outside the SOP (the order's fair remedy is not an
        item refund, the promise was a full refund, or no photo was shared) is declined and its gain
        taken back; a voucher owed and never issued never arrives. Each costs ``broken_promise``."""
        st, broken = self.state, self.table.unscaled.broken_promise
        if st.refund_promised:
            kept = self.order.fair_remedy.kind == "refund_item" and not st.refund_full and st.evidence == "sent"
            if not kept:
                st.mood = max(1.0, st.mood - st.refund_gain + broken)
        if st.voucher_owed and not st.voucher_issued:
            st.mood = max(1.0, st.mood + broken)
