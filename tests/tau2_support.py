"""Helpers of the τ² adapter tests: skip without τ²-bench, a small airline world of our own."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from interactcs_gym.tau2 import Tau2NotInstalledError, require_tau2
from interactcs_gym.tau2.official import TAU2_DISTRIBUTION


def _extra_installed() -> bool:
    try:
        metadata.distribution(TAU2_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    return True


def _probe() -> str | None:
    """None when τ²-bench is usable; else why not. Where the ``tau2`` extra is installed a broken
    τ²-bench is an error, not a reason to skip: CI installs the extra and runs every τ² test."""
    try:
        require_tau2()
    except Tau2NotInstalledError as exc:
        if _extra_installed():
            raise
        return str(exc).splitlines()[0]
    return None


MISSING = _probe()


#: Mark of the test modules that need τ²-bench: skipped, with the reason, where it is missing.
requires_tau2 = pytest.mark.skipif(
    MISSING is not None,
    reason=f"needs τ²-bench, pip install '.[tau2]': {MISSING} (README: 'τ²-bench adapters')")


def need_tau2() -> None:
    """Skip the calling test when the official τ²-bench package is not usable here."""
    if MISSING is not None:
        pytest.skip(f"needs τ²-bench, pip install '.[tau2]': {MISSING} "
                    f"(README: 'τ²-bench adapters')")


# ---------------------------------------------------------------------------- airline
# A small airline world of our own for the db_path= / tasks= arguments (users with their own
# database): a database in the package's airline data model (validated by FlightDB when the env
# loads it) and tasks in the package's Task model.
def _available(economy: int) -> dict:
    return {"status": "available",
            "available_seats": {"basic_economy": 9, "economy": 9, "business": 4},
            "prices": {"basic_economy": economy - 100, "economy": economy, "business": 3 * economy}}


def _reservation(rid: str, payment_id: str) -> dict:
    return {"reservation_id": rid, "user_id": "mia_li_3668", "origin": "JFK", "destination": "LAX",
            "flight_type": "one_way", "cabin": "economy",
            "flights": [{"flight_number": "HAT001", "date": "2024-05-20", "price": 300,
                         "origin": "JFK", "destination": "LAX"}],
            "passengers": [{"first_name": "Mia", "last_name": "Li", "dob": "1990-04-05"}],
            "payment_history": [{"payment_id": payment_id, "amount": 300}],
            "created_at": "2024-05-10T09:00:00", "total_baggages": 0, "nonfree_baggages": 0,
            "insurance": "no"}


AIRLINE_DB = {
    "flights": {"HAT001": {
        "flight_number": "HAT001", "origin": "JFK", "destination": "LAX",
        "scheduled_departure_time_est": "08:00:00", "scheduled_arrival_time_est": "11:30:00",
        "dates": {"2024-05-20": _available(300), "2024-05-21": _available(200)}}},
    "users": {"mia_li_3668": {
        "user_id": "mia_li_3668", "name": {"first_name": "Mia", "last_name": "Li"},
        "address": {"address1": "975 Sunset Drive", "address2": "Suite 217", "city": "Austin",
                    "country": "USA", "state": "TX", "zip": "78750"},
        "email": "mia.li3818@example.com", "dob": "1990-04-05",
        "payment_methods": {
            "credit_card_4421486": {"source": "credit_card", "id": "credit_card_4421486",
                                    "brand": "visa", "last_four": "7447"},
            "gift_card_7061921": {"source": "gift_card", "id": "gift_card_7061921",
                                  "amount": 50.0}},
        "saved_passengers": [], "membership": "gold", "reservations": ["NO6JO3", "ZFA04Y"]}},
    "reservations": {"NO6JO3": _reservation("NO6JO3", "credit_card_4421486"),
                     "ZFA04Y": _reservation("ZFA04Y", "gift_card_7061921")},
}


def _action(i: int, name: str, **arguments) -> dict:
    return {"action_id": f"{name}_{i}", "name": name, "arguments": arguments}


AIRLINE_TASKS = [
    {"id": "cancel_and_certificate",
     "user_scenario": {"instructions": {
         "domain": "airline", "reason_for_call": "You want to cancel reservation NO6JO3.",
         "known_info": "You are Mia Li, user id mia_li_3668.",
         "task_instructions": "Accept a $100 certificate for the trouble."}},
     "evaluation_criteria": {
         "actions": [_action(0, "get_user_details", user_id="mia_li_3668"),
                     _action(1, "get_reservation_details", reservation_id="NO6JO3"),
                     _action(2, "cancel_reservation", reservation_id="NO6JO3"),
                     _action(3, "send_certificate", user_id="mia_li_3668", amount=100)],
         "communicate_info": ["300"]}},
    {"id": "change_to_cheaper_flight",
     "user_scenario": {"instructions": {
         "domain": "airline", "reason_for_call": "Move reservation ZFA04Y to May 21.",
         "known_info": "You are Mia Li, user id mia_li_3668.",
         "task_instructions": "Use your gift card for any difference."}},
     "evaluation_criteria": {
         "actions": [_action(0, "get_reservation_details", reservation_id="ZFA04Y"),
                     _action(1, "update_reservation_flights", reservation_id="ZFA04Y",
                             cabin="economy", payment_id="gift_card_7061921",
                             flights=[{"flight_number": "HAT001", "date": "2024-05-21"}])]}},
]


def write_airline_world(folder: Path) -> tuple[str, str]:
    """``(db_path, tasks_path)`` of the small airline world, written into ``folder``."""
    db_path, tasks_path = folder / "airline_db.json", folder / "airline_tasks.json"
    db_path.write_text(json.dumps(AIRLINE_DB), encoding="utf-8")
    tasks_path.write_text(json.dumps(AIRLINE_TASKS), encoding="utf-8")
    return str(db_path), str(tasks_path)


def gold_db_hashes(env, task, sync: bool = False) -> tuple[str, str | None]:
    """``(agent DB hash, user DB hash)`` of the gold run, as the official ``EnvironmentEvaluator``
    computes them: a fresh environment, the task's initial state, then every gold action.

    ``sync=True`` also calls ``sync_tools`` after each gold action, as the official orchestrator
    does after every step of a real episode. Without user tools (retail, airline) it changes
    nothing. In telecom it matters: the official evaluator builds its gold databases
    *without* syncing while its replay of the episode syncs, so its ``db_match`` is False on most
    telecom tasks even for the gold trajectory (71 of 114: the device state, and for overdue bills
    the bill the user paid); an upstream quirk that only DB rate sees, as telecom's reward is
    scored by env assertions. The adapter's telecom state is compared with the synced gold run.
    """
    gold = env.unwrapped._make_environment()
    initial = task.initial_state
    gold.set_state(initialization_data=initial.initialization_data if initial else None,
                   initialization_actions=initial.initialization_actions if initial else None,
                   message_history=(initial.message_history or []) if initial else [])
    for action in task.evaluation_criteria.actions or []:
        try:
            gold.make_tool_call(tool_name=action.name, requestor=action.requestor,
                                **action.arguments)
        except Exception:  # the official evaluator logs and goes on, too
            pass
        if sync:
            gold.sync_tools()
    return gold.get_db_hash(), gold.get_user_db_hash()
