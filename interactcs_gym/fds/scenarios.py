"""FDS orders (SPEC 4.1): the after-sales disputes an episode is about.

An :class:`Order` holds what the platform knows (merchant, items, prices, delivery times, IM log,
complaint-history tag, responsibility assessment), what only the user knows (their account of what
happened and whether they hold a photo), and the fair remedy by the SOP (:mod:`.sop`). The bank is
``data/orders.json``, generated deterministically by ``python -m interactcs_gym.fds.generate_data``
and validated on load by :func:`load_orders`.

What the agent sees of an order is :meth:`Order.agent_facts` (rendered into its system prompt);
``dispute``, ``evidence`` and ``fair_remedy`` stay hidden from it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from interactcs_gym.fds.datafiles import DataFileError, read_data, validate_records
from interactcs_gym.fds.sop import (ComplaintHistory, DisputeType, RemedyKind, Responsible,
                                    needs_photo, sop_remedy)

ORDERS_FILE = "orders.json"
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


def minutes(hhmm: str) -> int:
    """Minutes since midnight of an ``HH:MM`` time."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_Frozen):
    """One line of the order: ``quantity`` x ``name`` at ``price`` (unit price)."""

    name: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=20)
    price: float = Field(gt=0)

    @property
    def line_total(self) -> float:
        return round(self.quantity * self.price, 2)


class IMMessage(_Frozen):
    """One line of the rider/merchant IM log (``system`` lines are platform events)."""

    time: str = Field(pattern=_HHMM)
    sender: Literal["rider", "merchant", "user", "system"]
    text: str = Field(min_length=1)


class Dispute(_Frozen):
    """What went wrong (hidden from the agent except through the user).

    ``user_account``: what the user will say happened when asked for details (first person).
    """

    type: DisputeType
    affected_item: str | None = None
    user_account: str = Field(min_length=1)


class Evidence(_Frozen):
    """Whether the user holds a photo, and what it shows (the text the user sends with it)."""

    photo: bool
    photo_description: str | None = None

    @model_validator(mode="after")
    def _description_iff_photo(self) -> Evidence:
        if self.photo != (self.photo_description is not None):
            raise ValueError("photo_description must be given exactly when photo is true")
        return self


class FairRemedy(_Frozen):
    """The remedy by the SOP, given the evidence the user holds (see :func:`.sop.sop_remedy`)."""

    kind: RemedyKind
    refund_amount: float | None = None
    rationale: str = Field(min_length=1)


class Order(_Frozen):
    """One disputed food-delivery order (SPEC 4.1)."""

    order_id: str = Field(pattern=r"^FD-\d{6}$")
    merchant: str = Field(min_length=1)
    items: tuple[Item, ...] = Field(min_length=1)
    delivery_fee: float = Field(ge=0)
    total: float = Field(gt=0)
    placed_at: str = Field(pattern=_HHMM)
    promised_delivery: str = Field(pattern=_HHMM)
    actual_delivery: str = Field(pattern=_HHMM)
    dispute: Dispute
    responsible: Responsible
    evidence: Evidence
    complaint_history: ComplaintHistory
    im_log: tuple[IMMessage, ...] = ()
    fair_remedy: FairRemedy

    @property
    def late_minutes(self) -> int:
        """Minutes the delivery arrived after the promised time (0 when on time or early)."""
        return max(0, minutes(self.actual_delivery) - minutes(self.promised_delivery))

    @property
    def affected(self) -> Item | None:
        """The order line the dispute is about, if any."""
        name = self.dispute.affected_item
        return next((it for it in self.items if it.name == name), None)

    @model_validator(mode="after")
    def _consistent(self) -> Order:
        total = round(sum(it.line_total for it in self.items) + self.delivery_fee, 2)
        if abs(total - self.total) > 0.005:
            raise ValueError(f"total {self.total} != sum of lines + delivery_fee ({total})")
        if not minutes(self.placed_at) < minutes(self.promised_delivery):
            raise ValueError("promised_delivery must be after placed_at")
        if not minutes(self.placed_at) < minutes(self.actual_delivery):
            raise ValueError("actual_delivery must be after placed_at")
        item_dispute = self.dispute.type not in ("late_delivery", "rider_conduct")
        if item_dispute and self.affected is None:
            raise ValueError(f"dispute.affected_item {self.dispute.affected_item!r} must name an item "
                             f"of the order for a {self.dispute.type} dispute")
        if not item_dispute and self.dispute.affected_item is not None:
            raise ValueError(f"a {self.dispute.type} dispute has no affected_item")
        if self.evidence.photo and not needs_photo(self.dispute.type):
            raise ValueError(f"evidence.photo must be false for a {self.dispute.type} dispute "
                             "(the SOP verifies it from order data)")
        kind = sop_remedy(self.dispute.type, self.responsible, self.complaint_history,
                          self.late_minutes, photo_received=self.evidence.photo)
        if self.fair_remedy.kind != kind:
            raise ValueError(f"fair_remedy.kind {self.fair_remedy.kind!r} contradicts the SOP, "
                             f"which gives {kind!r}")
        want_amount = self.affected.line_total if kind == "refund_item" and self.affected else None
        if self.fair_remedy.refund_amount != want_amount:
            raise ValueError(f"fair_remedy.refund_amount must be {want_amount} for {kind!r}")
        return self

    def agent_facts(self) -> dict[str, Any]:
        """The facts the agent is given (its system prompt's order block), as plain data."""
        return {
            "order_id": self.order_id,
            "merchant": self.merchant,
            "items": [{"name": it.name, "quantity": it.quantity, "price": it.price} for it in self.items],
            "delivery_fee": self.delivery_fee,
            "total": self.total,
            "placed_at": self.placed_at,
            "promised_delivery": self.promised_delivery,
            "actual_delivery": self.actual_delivery,
            "late_minutes": self.late_minutes,
            "responsibility_assessment": self.responsible,
            "complaint_history": self.complaint_history,
            "im_log": [m.model_dump() for m in self.im_log],
        }


@functools.lru_cache(maxsize=8)
def _load_orders_cached(source: str | None) -> tuple[Order, ...]:
    data, label = read_data(source, ORDERS_FILE)
    return tuple(validate_records(data, Order, label, key="order_id"))


def load_orders(source: str | Path | None = None) -> tuple[Order, ...]:
    """The order bank: the packaged ``data/orders.json``, or ``source`` (a JSON/YAML file).

    Raises :class:`~interactcs_gym.fds.datafiles.DataFileError` naming the file, the record and the
    field on any invalid record. Cached per source.
    """
    return _load_orders_cached(None if source is None else str(source))


@functools.lru_cache(maxsize=8)
def orders_by_id(source: str | None = None) -> dict[str, Order]:
    """``order_id -> Order`` for the bank of :func:`load_orders`."""
    return {o.order_id: o for o in load_orders(source)}


@functools.lru_cache(maxsize=8)
def catalog(source: str | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """All merchant names and all item names of the bank (used to spot invented facts)."""
    orders = load_orders(source)
    return (frozenset(o.merchant for o in orders),
            frozenset(it.name for o in orders for it in o.items))


__all__ = ["Order", "Item", "IMMessage", "Dispute", "Evidence", "FairRemedy", "load_orders",
           "orders_by_id", "catalog", "minutes", "DataFileError", "ORDERS_FILE"]
