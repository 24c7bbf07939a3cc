"""Compensation the agent grants on the τ² domains: the per-step cost of the Tau2 envs.

The cost of a step is the money the business pays out to the customer because of the agent's tool
calls in that step, read from the domain database before and after the calls (so it is exactly
what the official tools did, whatever arguments the agent used). Unit: US dollars, the unit of the
domain databases. Kinds (keys of ``info["costs"]``):

========  ===========  ====================================================================
domain    kind         what counts
========  ===========  ====================================================================
airline   certificate  ``send_certificate``: the amount of every travel certificate added to a
                       user's payment methods.
airline   refund       negative payments appended to a reservation's payment history:
                       ``cancel_reservation`` (everything paid is refunded) and
                       ``update_reservation_flights`` to cheaper flights (the difference).
retail    refund       net money returned on an order: ``cancel_pending_order`` (the payments),
                       ``return_delivered_order_items`` (the returned items' prices),
                       ``exchange_delivered_order_items`` and ``modify_pending_order_items`` to
                       cheaper items (the price difference). ``modify_pending_order_payment``
                       moves a payment (refund of the old, charge of the new): net 0.
telecom   (none)       no telecom tool grants anything (``refuel_data`` is charged to the
                       customer), so telecom steps cost 0.
========  ===========  ====================================================================

Charges to the customer never make a cost negative: a cost is at least 0 (SPEC 8.1). The envs'
``cost_weights`` kwarg rescales each kind (e.g. ``{"refund": 0.0, "certificate": 0.01}`` counts
only certificates, in hundreds of dollars).
"""

from __future__ import annotations

from typing import Any

CostState = dict[str, Any]

#: The cost kinds each domain can charge (keys of ``info["costs"]`` and of ``cost_weights``).
COST_KINDS: dict[str, tuple[str, ...]] = {"airline": ("certificate", "refund"),
                                          "retail": ("refund",), "telecom": (),
                                          "telecom-workflow": (), "mock": ()}


def _touched(calls: list[tuple[str, dict[str, Any]]], key: str) -> set[str]:
    return {str(args[key]) for _, args in calls if isinstance(args.get(key), (str, int))}


def snapshot(domain: str, db: Any, calls: list[tuple[str, dict[str, Any]]]) -> CostState:
    """What :func:`compensation` needs to know about the records the calls may change."""
    if domain == "retail":
        orders = {oid: (len(db.orders[oid].payment_history), db.orders[oid].status)
                  for oid in _touched(calls, "order_id") if oid in db.orders}
        return {"orders": orders}
    if domain == "airline":
        reservations = {rid: len(db.reservations[rid].payment_history)
                        for rid in _touched(calls, "reservation_id") if rid in db.reservations}
        users = {uid: set(db.users[uid].payment_methods)
                 for uid in _touched(calls, "user_id") if uid in db.users}
        return {"reservations": reservations, "users": users}
    return {}


def compensation(domain: str, db: Any, state: CostState) -> dict[str, float]:
    """Money granted since ``state`` was taken, by kind (kinds with 0 are left out)."""
    costs: dict[str, float] = {}
    if domain == "retail":
        refund = sum(_retail_order_refund(db.orders[oid], n, status)
                     for oid, (n, status) in state["orders"].items())
        if refund > 0:
            costs["refund"] = round(refund, 2)
    elif domain == "airline":
        refund = sum(-p.amount for rid, n in state["reservations"].items()
                     for p in db.reservations[rid].payment_history[n:] if p.amount < 0)
        certificate = sum(method.amount for uid, before in state["users"].items()
                          for mid, method in db.users[uid].payment_methods.items()
                          if mid not in before and method.source == "certificate")
        if refund > 0:
            costs["refund"] = float(refund)
        if certificate > 0:
            costs["certificate"] = float(certificate)
    return costs


def _retail_order_refund(order: Any, n_payments: int, status_before: str) -> float:
    """Net money an order returned to the customer since it had ``n_payments`` transactions."""
    net = 0.0
    for payment in order.payment_history[n_payments:]:
        net += payment.amount if payment.transaction_type == "refund" else -payment.amount
    if order.status != status_before:
        if order.status == "return requested":
            prices = {item.item_id: item.price for item in order.items}
            net += sum(prices.get(item_id, 0.0) for item_id in order.return_items or [])
        elif order.status == "exchange requested":
            net += max(0.0, -(order.exchange_price_difference or 0.0))
    return max(0.0, net)
