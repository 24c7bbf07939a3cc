"""Gold replays: a task's gold actions played through the gym env earn the official reward 1.0 and
leave the database the official evaluator expects, in every domain, on the package's real data
(the full replay of every task is ``python -m interactcs_gym.tau2.replay``: benchmarks/README.md).
"""

from __future__ import annotations

import pytest
from tau2_support import gold_db_hashes, need_tau2, requires_tau2, write_airline_world

pytestmark = [pytest.mark.tau2, requires_tau2]

# Retail tasks covering every write tool: return (2), item change (3), exchange (6), transfer
# (10), cancel + calculate (16), addresses (22), payment change (40).
RETAIL_TASKS = ["2", "3", "6", "10", "16", "22", "40"]
# Telecom: user device actions only, agent + user actions, an ACTION-scored task, a bill payment.
TELECOM_TASKS = [
    "[mobile_data_issue]airplane_mode_on|data_mode_off[PERSONA:None]",
    "[mobile_data_issue]data_mode_off|data_usage_exceeded[PERSONA:None]",
    "[service_issue]break_apn_settings|lock_sim_card_pin[PERSONA:None]",
    "[service_issue]airplane_mode_on|overdue_bill_suspension[PERSONA:None]",  # the user pays
]
# Airline: a certificate (2), a cancellation (9), a cheaper flight change (11), cancel + book (14),
# flights + baggage (17), three bookings (23).
AIRLINE_TASKS = ["2", "9", "11", "14", "17", "23"]
#: Every SAMPLE-th task of each domain (tasks sorted by id) in the sample replay.
SAMPLE = 10


@pytest.fixture(scope="module")
def retail():
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    return Tau2Env(domain="retail", user_simulator="scripted")


@pytest.fixture(scope="module")
def telecom():
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    return Tau2Env(domain="telecom", user_simulator="scripted")


@pytest.fixture(scope="module")
def airline():
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    return Tau2Env(domain="airline", user_simulator="scripted")


@pytest.fixture(scope="module")
def own_airline(tmp_path_factory):
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    db_path, tasks_path = write_airline_world(tmp_path_factory.mktemp("airline"))
    return Tau2Env(domain="airline", tasks=tasks_path, db_path=db_path, user_simulator="scripted")


@pytest.fixture
def fixed_uuid(monkeypatch):
    """telecom's refuel_data names a new bill with uuid4: fixed here so that the live, the gold
    and the replayed databases can be compared (the official evaluator has the same issue)."""
    import uuid

    need_tau2()
    import tau2.domains.telecom.tools as telecom_tools

    monkeypatch.setattr(telecom_tools, "uuid", type("U", (), {"uuid4": lambda: uuid.UUID(int=7)}))


def _check_gold(env, task_id):
    from interactcs_gym.tau2.replay import replay_gold

    reward, info = replay_gold(env, task_id)
    task = env.tasks[env._task_index(task_id)]
    assert reward == 1.0, info["reward_info"]
    assert info["reward_info"]["reward"] == 1.0
    agent_db, user_db = gold_db_hashes(env, task, sync=env.domain == "telecom")
    assert info["db_hash"] == agent_db
    assert env._episode.environment.get_user_db_hash() == user_db
    assert info["tau2_metrics"]["pass"] == 1.0 and info["tau2_metrics"]["action_reward"] == 1.0
    assert info["termination_reason"] == "user_stop"
    return info


@pytest.mark.parametrize("task_id", RETAIL_TASKS)
def test_retail_gold_replay(retail, task_id):
    info = _check_gold(retail, task_id)
    assert info["reward_info"]["db_check"]["db_match"] is True


@pytest.mark.parametrize("task_id", TELECOM_TASKS)
def test_telecom_gold_replay_with_user_device_actions(telecom, task_id, fixed_uuid):
    info = _check_gold(telecom, task_id)
    task = telecom.tasks[telecom._task_index(task_id)]
    assert info["reward_info"]["env_assertions"] and all(
        check["met"] for check in info["reward_info"]["env_assertions"])
    basis = [str(getattr(b, "value", b)) for b in task.evaluation_criteria.reward_basis]
    assert info["reward_info"]["reward_breakdown"]["ENV_ASSERTION"] == 1.0
    assert sorted(info["reward_info"]["reward_breakdown"]) == sorted(basis)


@pytest.mark.parametrize("task_id", AIRLINE_TASKS)
def test_airline_gold_replay(airline, task_id):
    info = _check_gold(airline, task_id)
    assert info["reward_info"]["db_check"]["db_match"] is True
    assert info["reward_info"]["reward_breakdown"] == {"DB": 1.0, "COMMUNICATE": 1.0}


@pytest.mark.parametrize("task_id", ["cancel_and_certificate", "change_to_cheaper_flight"])
def test_airline_gold_replay_on_own_database(own_airline, task_id):
    info = _check_gold(own_airline, task_id)
    assert info["reward_info"]["db_check"]["db_match"] is True
    assert info["reward_info"]["reward_breakdown"] == {"DB": 1.0, "COMMUNICATE": 1.0}


def test_wrong_final_database_fails_the_official_check(retail):
    """The converse: skip one gold write (the exchange of task 6) and the DB check fails."""
    from interactcs_gym.tau2.replay import gold_dialogue

    index = retail._task_index("6")
    agent, script = gold_dialogue(retail.tasks[index])
    agent = [a for a in agent if "exchange_delivered_order_items" not in a]
    retail.reset(seed=0, options={"task": index, "user_script": script})
    for action in agent:
        _, reward, terminated, _, info = retail.step(action)
    assert terminated and reward == 0.0
    assert info["reward_info"]["db_check"]["db_match"] is False
    assert info["tau2_metrics"]["db"] == 0.0 and info["tau2_metrics"]["pass"] == 0.0
    assert info["tau2_metrics"]["action_reward"] == pytest.approx(5 / 6)
    parts = info["tau2_metrics"]
    assert (parts["actions_matched"], parts["actions_total"]) == (5, 6)


@pytest.mark.parametrize("domain", ["retail", "airline", "telecom"])
def test_a_sample_of_every_domain_replays_to_reward_one(domain, retail, airline, telecom,
                                                        fixed_uuid):
    from interactcs_gym.tau2.replay import replay_gold

    env = {"retail": retail, "airline": airline, "telecom": telecom}[domain]
    assert len(env.tasks) == {"retail": 114, "airline": 50, "telecom": 114}[domain]
    sample = env.tasks[::SAMPLE]
    failed = []
    for task in sample:
        reward, info = replay_gold(env, task.id)
        gold = gold_db_hashes(env, task, sync=domain == "telecom")
        device = env._episode.environment.get_user_db_hash()
        if reward != 1.0 or (info["db_hash"], device) != gold:
            failed.append(task.id)
    assert failed == [], f"{len(failed)} of {len(sample)} tasks failed, e.g. {failed[:3]}"


def test_the_replay_command_prints_a_row_per_domain(capsys):
    from interactcs_gym.tau2.replay import main

    need_tau2()
    assert main(["--domain", "telecom", "retail", "--limit", "2", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1:] for line in lines[:4]] == [["reward=1.0", "user_stop"]] * 4
    assert lines[4] == "| domain | split | tasks at reward 1.0 | official DB match | time (s) |"
    assert lines[6].startswith("| telecom | base | 2/2 | ") and lines[7].startswith(
        "| retail | base | 2/2 | 2/2 | ")
    with pytest.raises(SystemExit):
        main(["--domain", "retail", "airline", "--db-path", "db.json"])
