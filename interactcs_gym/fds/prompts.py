"""The FDS agent's system prompt: role, SOP, protocol and the order's facts (never the persona).

:func:`system_prompt` renders it; :func:`parse_order_block` reads the order block back into data
(the scripted SOP agent uses it: it sees exactly what an LLM agent sees). The order block is a
stable ``key: value`` layout under the heading ``## Order``; IM-log lines read
``- [HH:MM] sender: text``.
"""

from __future__ import annotations

from typing import Any

from interactcs_gym.fds.protocol import PROTOCOL_HINT
from interactcs_gym.fds.scenarios import Order
from interactcs_gym.fds.sop import LATE_THRESHOLD_MIN, VOUCHER_VALUE

PHOTO_MARKER = "[Photo:"
"""How a user's photo appears in the dialogue: a line ``[Photo: <what it shows>]``."""

SOP_TEXT = "\n".join([
    "## Standard operating procedure (SOP)",
    "1. Investigate first: acknowledge the problem, ask what happened, check the order facts below.",
    f"2. Verify before compensating. A late delivery is verified by the delivery times (late by at "
    f"least {LATE_THRESHOLD_MIN} minutes). Rider misconduct is verified by the IM log "
    f"(responsibility_assessment \"rider\"). Every other problem (damaged, missing item, wrong "
    f"item, cold food, quality) is verified only by a photo from the user, which appears in the "
    f"chat as \"{PHOTO_MARKER} ...]\".",
    f"3. No compensation when the user is responsible, when the delivery was less than "
    f"{LATE_THRESHOLD_MIN} minutes late, or for a matter of taste (a quality complaint with "
    f"responsibility_assessment \"unclear\"): apologise, explain the policy and record the "
    f"feedback for the merchant or rider.",
    "4. If the problem cannot be verified, or the complaint_history is \"frequent\", do not "
    "compensate in chat: submit the case for manual review.",
    "5. A verified missing or wrong item: refund that item's price (the only refund you may "
    "grant). Never promise any other refund, such as a full refund; you may submit a refund "
    "request for manual review instead.",
    f"6. Any other verified problem: you may issue one goodwill voucher worth "
    f"{VOUCHER_VALUE:.2f}. At most one voucher per session, and only when it is justified; "
    f"offering it before issuing it is good practice.",
    "7. Never invent order facts: quote only the facts below (merchant, items, prices, times, log).",
])


def _money(x: float) -> str:
    return f"{x:.2f}"


def order_block(order: Order) -> str:
    """The ``## Order`` block: what the platform shows the agent about the order."""
    f = order.agent_facts()
    lines = ["## Order", f"order_id: {f['order_id']}", f"merchant: {f['merchant']}", "items:"]
    lines += [f"- {it['quantity']} x {it['name']}: {_money(it['price'])} each" for it in f["items"]]
    lines += [f"delivery_fee: {_money(f['delivery_fee'])}", f"total: {_money(f['total'])}",
              f"placed_at: {f['placed_at']}", f"promised_delivery: {f['promised_delivery']}",
              f"actual_delivery: {f['actual_delivery']}", f"late_minutes: {f['late_minutes']}",
              f"responsibility_assessment: {f['responsibility_assessment']}",
              f"complaint_history: {f['complaint_history']}", "im_log:"]
    lines += [f"- [{m['time']}] {m['sender']}: {m['text']}" for m in f["im_log"]]
    return "\n".join(lines)


def system_prompt(order: Order, max_turns: int) -> str:
    """The whole system prompt of an FDS episode."""
    return f"""\
You are a customer-service agent of a food-delivery platform. A user contacts you about a problem \
with the order below. Resolve it politely and efficiently, following the SOP, within {max_turns} turns.

{SOP_TEXT}

## Protocol
{PROTOCOL_HINT}
The <think> block is never shown to the user. The action "voucher" issues the goodwill voucher \
together with this turn (it costs the platform; a second voucher is refused). A malformed turn \
still reaches the user as best as it can be read, but never issues a voucher.

{order_block(order)}"""


def parse_order_block(text: str) -> dict[str, Any]:
    """Read the ``## Order`` block of a system prompt back into the dict of :meth:`Order.agent_facts`.

    Raises ``ValueError`` when ``text`` holds no order block.
    """
    if "## Order\n" not in text:
        raise ValueError("no '## Order' block in the text")
    block = text.split("## Order\n", 1)[1]
    facts: dict[str, Any] = {"items": [], "im_log": []}
    section = None
    for line in block.splitlines():
        if line.startswith("- ") and section == "items":
            qty, rest = line[2:].split(" x ", 1)
            name, price = rest.rsplit(": ", 1)
            facts["items"].append({"name": name, "quantity": int(qty),
                                   "price": float(price.split()[0])})
        elif line.startswith("- [") and section == "im_log":
            time, rest = line[3:].split("] ", 1)
            sender, msg = rest.split(": ", 1)
            facts["im_log"].append({"time": time, "sender": sender, "text": msg})
        elif ": " in line or line.endswith(":"):
            key, _, value = line.partition(":")
            value = value.strip()
            section = key if not value else None
            if value:
                facts[key] = float(value) if key in ("delivery_fee", "total") else (
                    int(value) if key == "late_minutes" else value)
    return facts
