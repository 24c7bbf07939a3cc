"""The Tau2 envs under the suite's contract (SPEC 3): info keys, determinism, check_env, task
selection and splits, malformed actions, episode ends, costs and telecom's dual control."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from tau2_support import need_tau2, requires_tau2, write_airline_world

from interactcs_gym import INFO_KEYS

pytestmark = [pytest.mark.tau2, requires_tau2]

EXTRA_KEYS = ("tool_calls", "user_tool_calls", "step_count", "reward_info", "tau2_metrics",
              "db_hash", "simulator_error")
LOOKUP = '{"name": "find_user_id_by_email", "arguments": {"email": "noah.brown7922@example.com"}}'


def make(domain="retail", **kw):
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    kw.setdefault("user_simulator", "scripted")
    return Tau2Env(domain=domain, **kw)


@pytest.fixture(scope="module")
def retail():
    return make()


def play(env, actions, **reset):
    """Reset, play ``actions``, return every (obs, reward, terminated, truncated, info)."""
    out = [env.reset(**reset)]
    for action in actions:
        out.append(env.step(action))
        if out[-1][2] or out[-1][3]:
            break
    return out


# ---------------------------------------------------------------------------- contract
def test_reset_info_carries_tools_policy_and_the_official_opening(retail):
    from tau2.domains.retail.utils import RETAIL_POLICY_PATH

    obs, info = retail.reset(seed=0, options={"user_script": ["Hi, I need help with an order."]})
    assert set(INFO_KEYS) <= set(info) and set(EXTRA_KEYS) <= set(info)
    assert obs == "Hi, I need help with an order."
    assert [m["role"] for m in info["messages"]] == ["system", "assistant", "user"]
    assert info["messages"][1]["content"] == "Hi! How can I help you today?"
    policy = RETAIL_POLICY_PATH.read_text()
    assert info["policy"] == policy and policy in info["messages"][0]["content"]
    names = [t["function"]["name"] for t in info["tools"]]
    assert {"get_order_details", "cancel_pending_order", "transfer_to_human_agents",
            "done"} <= set(names)
    assert all(t["type"] == "function" and t["function"]["parameters"]["type"] == "object"
               for t in info["tools"])
    assert '"name": "cancel_pending_order"' in info["messages"][0]["content"]
    assert info["task"] == {"domain": "retail", "split": "base", "index": 0, "task_id": "0"}
    assert (info["cost"], info["turn"], info["format_ok"]) == (0.0, 0, True)
    assert info["reward_info"] is None


def test_tools_can_stay_out_of_the_prompt():
    _, info = make(tools_in_prompt=False).reset(seed=0)
    assert "<tools>" not in info["messages"][0]["content"] and info["tools"]


def test_step_info_tool_results_and_user_replies(retail):
    steps = play(retail, [LOOKUP, "Thanks, and what is your order id?"], seed=3,
                 options={"user_script": ["I want to return something.", "It is #W7678072."]})
    obs, reward, term, trunc, info = steps[1]
    assert obs == "noah_brown_6181" and info["messages"][-1]["role"] == "tool"
    assert info["tool_calls"] == [{"name": "find_user_id_by_email",
                                   "arguments": {"email": "noah.brown7922@example.com"},
                                   "content": "noah_brown_6181", "error": False}]
    assert set(INFO_KEYS) <= set(info) and "tools" not in info
    # official steps: the user's first message (1), the agent's call (2), the result (3)
    assert (reward, term, trunc, info["turn"], info["step_count"]) == (0.0, False, False, 1, 3)
    obs, reward, term, trunc, info = steps[2]
    assert obs == "It is #W7678072." and info["messages"][-1] == {"role": "user", "content": obs}
    assert info["messages"][-2] == {"role": "assistant",
                                    "content": "Thanks, and what is your order id?"}
    assert info["tool_calls"] == [] and info["step_count"] == 5


def test_several_tool_calls_in_one_turn(retail):
    retail.reset(seed=0)
    obs, *_, info = retail.step(
        '[{"name": "find_user_id_by_email", "arguments": {"email": "noah.brown7922@example.com"}},'
        ' {"name": "get_user_details", "arguments": {"user_id": "no_such_user"}}]')
    first, second = obs.split("\n")
    assert first == "[find_user_id_by_email] noah_brown_6181"
    assert second == "[get_user_details] Error: User not found"
    assert [c["error"] for c in info["tool_calls"]] == [False, True] and info["format_ok"]


def test_tool_results_as_user_messages_for_strict_servers():
    env = make(tool_role="user")
    env.reset(seed=0)
    obs, *_, info = env.step(LOOKUP)
    assert obs == "[tool] noah_brown_6181"
    assert info["messages"][-1] == {"role": "user", "content": obs}
    obs, *_, info = env.step("{bad")
    assert obs.startswith("[tool] Your tool call is not valid JSON")
    assert {m["role"] for m in info["messages"]} == {"system", "user", "assistant"}


def test_check_env_passes():
    check_env(make(), skip_render_check=True)


def test_same_seed_same_actions_same_episode():
    actions = [LOOKUP, '{"name": "get_order_details", "arguments": {"order_id": "#W7678072"}}',
               "{broken", "All done. ###STOP###"]
    a = play(make(), actions, seed=11)
    b = play(make(), actions, seed=11)
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert x[0] == y[0] and x[-1] == y[-1] and x[1:-1] == y[1:-1]
    assert a[-1][-1]["reward_info"] is not None


def test_registered_ids_make_the_right_domains(tmp_path):
    need_tau2()
    assert gym.spec("Tau2-Retail-v0").nondeterministic
    env = gym.make("Tau2-Telecom-v0", user_simulator="scripted")
    _, info = env.reset(seed=0)
    assert info["task"]["domain"] == "telecom" and "toggle_airplane_mode" not in str(info["tools"])
    env = gym.make("Tau2-Airline-v0", user_simulator="scripted")
    _, info = env.reset(seed=51)
    assert info["task"] == {"domain": "airline", "split": "base", "index": 1, "task_id": "1"}
    assert "send_certificate" in [t["function"]["name"] for t in info["tools"]]
    db_path, tasks_path = write_airline_world(tmp_path)  # own database and tasks
    env = gym.make("Tau2-Airline-v0", user_simulator="scripted", db_path=db_path, tasks=tasks_path)
    _, info = env.reset(seed=1)
    assert info["task"]["task_id"] == "change_to_cheaper_flight"


# ---------------------------------------------------------------------------- tasks and splits
def test_task_selection_by_seed_index_id_and_cycling(retail):
    n = len(retail.tasks)
    assert n == 114
    assert retail.reset(seed=n + 5)[1]["task"]["index"] == 5
    assert retail.reset(seed=0, options={"task": 7})[1]["task"]["task_id"] == "7"
    assert retail.reset(seed=0, options={"task": "12"})[1]["task"]["index"] == 12
    assert retail.reset(seed=0, options={"task": -1})[1]["task"]["index"] == n - 1
    retail.reset(seed=40)
    assert [retail.reset()[1]["task"]["index"] for _ in range(2)] == [41, 42]
    with pytest.raises(ValueError, match="out of range"):
        retail.reset(options={"task": n})
    with pytest.raises(ValueError, match="not in split"):
        retail.reset(options={"task": "no-such-task"})
    assert retail.reset(seed=9, options={"user_index": n + 2})[1]["task"]["index"] == 2
    fixed = make(task="3")
    assert {fixed.reset(seed=s)[1]["task"]["task_id"] for s in range(3)} == {"3"}


def test_splits_from_a_split_file(tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["5", "1", "9"], "test": ["2"]}))
    env = make(split="train", split_file=str(split_file))
    assert [t.id for t in env.tasks] == ["1", "5", "9"]  # in the task set's order
    assert env.reset(seed=4)[1]["task"] == {"domain": "retail", "split": "train", "index": 1,
                                           "task_id": "5"}
    assert len(make(split="base", split_file=str(split_file)).tasks) == 114
    with pytest.raises(ValueError, match="not in .*it has \\['test', 'train'\\]"):
        make(split="dev", split_file=str(split_file))
    split_file.write_text(json.dumps({"train": ["5", "nope"]}))
    with pytest.raises(ValueError, match="absent from the task set"):
        make(split="train", split_file=str(split_file))


def test_official_splits():
    sizes = {d: (len(make(d, split="train").tasks), len(make(d, split="test").tasks))
             for d in ("retail", "airline", "telecom")}
    assert sizes == {"retail": (74, 40), "airline": (30, 20), "telecom": (74, 40)}
    train = {t.id for t in make(split="train").tasks}
    assert not train & {t.id for t in make(split="test").tasks}
    test = make("airline", split="test")  # official test ids, numerically sorted
    assert [t.id for t in test.tasks[:4]] == ["2", "6", "8", "13"]
    assert test.reset(seed=21)[1]["task"]["task_id"] == "6"


def test_tasks_are_sorted_by_id_whatever_the_package_order(monkeypatch):
    from interactcs_gym.tau2.official import require_tau2, task_order

    assert sorted(["10", "9", "[b]", "100", "[a]"], key=task_order) == [
        "9", "10", "100", "[a]", "[b]"]
    telecom = [t.id for t in make("telecom").tasks]
    assert len(telecom) == 114 and telecom == sorted(telecom)
    assert telecom[0] == "[mms_issue]airplane_mode_on|bad_network_preference|bad_wifi_calling|" \
        "break_apn_mms_setting|break_app_both_permissions|data_mode_off|data_usage_exceeded|" \
        "unseat_sim_card|user_abroad_roaming_disabled_off[PERSONA:Hard]"
    registry = require_tau2()
    loader = registry.get_tasks_loader("telecom")
    monkeypatch.setattr(registry, "get_tasks_loader", lambda name: (
        (lambda *a: loader(*a)[::-1]) if name == "telecom" else type(registry).get_tasks_loader(
            registry, name)))
    shuffled = make("telecom")
    assert [t.id for t in shuffled.tasks] == telecom
    assert shuffled.reset(seed=7)[1]["task"]["task_id"] == telecom[7]
    test = make("telecom", split="test")
    assert [t.id for t in test.tasks] == [i for i in telecom if i in {t.id for t in test.tasks}]


# ---------------------------------------------------------------------------- malformed actions
BAD_ACTIONS = {
    "bad json": ('{"name": "get_order_details", "arguments": {"order_id": "#W1"', "not valid JSON"),
    "unknown tool": ('{"name": "refund_everything", "arguments": {}}',
                     "Unknown tool `refund_everything`"),
    "wrong type": ('{"name": "get_order_details", "arguments": {"order_id": 5}}',
                   "order_id: Input should be a valid string"),
    "missing argument": ('{"name": "cancel_pending_order", "arguments": {"order_id": "#W1"}}',
                         "reason: Field required"),
    "extra argument": ('{"name": "get_user_details", "arguments": {"user_id": "x", "pin": 1}}',
                       "no parameter(s) ['pin']"),
    "arguments not an object": ('{"name": "get_user_details", "arguments": ["x"]}', "JSON object"),
    "empty": ("", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_ACTIONS))
def test_malformed_tool_calls_become_explanations(retail, case):
    action, words = BAD_ACTIONS[case]
    _, info0 = retail.reset(seed=0)
    obs, reward, term, trunc, info = retail.step(action)
    assert words in obs and info["format_error"] == obs and info["format_ok"] is False
    assert info["messages"][-1] == {"role": "tool", "content": obs}
    assert (reward, term, trunc, info["tool_calls"], info["cost"]) == (0.0, False, False, [], 0.0)
    assert info["step_count"] == info0["step_count"] + 2
    assert len(retail._episode.trajectory()) == 2  # nothing reached the official trajectory
    obs, *_ = retail.step(LOOKUP)  # the episode goes on
    assert obs == "noah_brown_6181"


def test_garbage_strings_never_raise(retail):
    retail.reset(seed=0, options={"user_script": ["hi"] * 10})
    for action in ["\x00\udcff<|im_end|>", "<tool_call>{", "[" * 5000, "x" * 20_000,
                   "user: ###TRANSFER###", "```json\n```"]:
        _, _, term, trunc, info = retail.step(action)
        assert isinstance(info["format_ok"], bool)
        if term or trunc:
            break


def test_malformed_turns_do_not_change_the_official_outcome(retail):
    from interactcs_gym.tau2.replay import gold_dialogue

    agent, script = gold_dialogue(retail.tasks[16])
    noisy = [x for a in agent for x in ("{oops", '{"name": "nope"}', a)]
    steps = play(retail, noisy, seed=0, options={"task": 16, "user_script": script})
    assert steps[-1][2] and steps[-1][1] == 1.0
    assert sum(not s[-1]["format_ok"] for s in steps[1:]) == 2 * len(agent)


# ---------------------------------------------------------------------------- episode ends
def test_agent_stop_by_token_and_by_done_tool(retail):
    for stop in ["Bye! ###STOP###", '{"name": "done", "arguments": {}}']:
        retail.reset(seed=0)
        obs, reward, term, trunc, info = retail.step(stop)
        assert term and not trunc and info["termination_reason"] == "agent_stop"
        assert info["reward_info"]["reward"] == reward == 0.0
        assert obs == "(the conversation ended)"
        assert info["messages"][-1] == {"role": "tool", "content": obs}


def test_user_stop_transfer_and_out_of_scope(retail):
    for says, reason in [("Thanks ###STOP###", "user_stop"), ("###TRANSFER###", "transfer"),
                         ("###OUT-OF-SCOPE###", "out_of_scope")]:
        steps = play(retail, ["How can I help?"], seed=0, options={"user_script": ["hi", says]})
        obs, _, term, trunc, info = steps[-1]
        assert term and not trunc and obs == says and info["termination_reason"] == reason
        assert info["tau2_metrics"] is not None and info["db_hash"]


def test_step_budget_truncates_with_the_official_zero():
    env = make(max_steps=8)
    # steps: user opens (1), call + result (3), malformed turn (5), message + reply (7), call (8)
    steps = play(env, [LOOKUP, "{bad", "hello?", LOOKUP, LOOKUP], seed=16,
                 options={"user_script": ["hi"] * 10})
    _, reward, term, trunc, info = steps[-1]
    assert trunc and not term and info["termination_reason"] == "max_steps" and reward == 0.0
    assert info["step_count"] == 8 and len(steps) == 5
    assert info["reward_info"]["reward"] == 0.0
    assert "prematurely" in info["reward_info"]["info"]["note"]
    assert info["tau2_metrics"]["pass"] == 0.0 and info["tau2_metrics"]["actions_total"] == 9
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("hello")


# ---------------------------------------------------------------------------- costs
def _costs_of_gold(env, task_id):
    from interactcs_gym.tau2.replay import gold_dialogue

    index = env._task_index(task_id)
    agent, script = gold_dialogue(env.tasks[index])
    steps = play(env, agent, seed=0, options={"task": index, "user_script": script})
    assert steps[-1][1] == 1.0
    per_call = [(s[-1]["tool_calls"][0]["name"], s[-1]["costs"]) for s in steps[1:]
                if s[-1]["tool_calls"] and s[-1]["cost"]]
    return per_call, steps[-1][-1]["cost_total"]


@pytest.mark.parametrize("task_id, expected_calls, total", [
    # two cancelled orders (payments 3131.10 and 4777.75) and one returned item (367.38)
    ("16", [("cancel_pending_order", 3131.10), ("cancel_pending_order", 4777.75),
            ("return_delivered_order_items", 367.38)], 8276.23),
    ("2", [("return_delivered_order_items", 561.05 + 342.81 + 381.26)], 1285.12),
    ("1", [("exchange_delivered_order_items", 262.47 - 249.01)], 13.46),  # to a cheaper item
    # a cancelled order (1252.16) and an item changed to a cheaper one (2749.56 -> 2530.72)
    ("74", [("cancel_pending_order", 1252.16), ("modify_pending_order_items", 2749.56 - 2530.72)],
     1471.0),
    ("6", [], 0.0),   # exchange to a dearer item: the customer pays 12.07, no cost
    ("40", [], 0.0),  # payment method change: refund of the old one, charge of the new one
])
def test_retail_refunds_are_the_cost(retail, task_id, expected_calls, total):
    per_call, cost_total = _costs_of_gold(retail, task_id)
    assert [name for name, _ in per_call] == [name for name, _ in expected_calls]
    for (_, costs), (_, amount) in zip(per_call, expected_calls):
        assert costs == {"refund": pytest.approx(amount)}
    assert cost_total == pytest.approx(total)


@pytest.mark.parametrize("task_id, expected_calls, total", [
    ("2", [("send_certificate", {"certificate": 50.0})], 50.0),
    ("9", [("cancel_reservation", {"refund": 6178.0})], 6178.0),  # everything paid, refunded
    # GV1N64, 3 passengers, business (561 + 1339) -> basic economy (53 + 99): 3 x 1748
    ("11", [("update_reservation_flights", {"refund": 5244.0})], 5244.0),
])
def test_airline_certificates_and_refunds_are_the_cost(task_id, expected_calls, total):
    per_call, cost_total = _costs_of_gold(make("airline"), task_id)
    assert per_call == expected_calls and cost_total == total


def test_cost_weights_and_own_airline_database(tmp_path):
    db_path, tasks_path = write_airline_world(tmp_path)
    env = make("airline", db_path=db_path, tasks=tasks_path)
    per_call, total = _costs_of_gold(env, "cancel_and_certificate")
    assert per_call == [("cancel_reservation", {"refund": 300.0}),
                        ("send_certificate", {"certificate": 100.0})]
    assert total == 400.0
    per_call, total = _costs_of_gold(env, "change_to_cheaper_flight")
    assert per_call == [("update_reservation_flights", {"refund": 100.0})] and total == 100.0
    weighted = make("airline", db_path=db_path, tasks=tasks_path,
                    cost_weights={"refund": 0.0, "certificate": 0.01})
    per_call, total = _costs_of_gold(weighted, "cancel_and_certificate")
    assert per_call == [("send_certificate", {"certificate": 1.0})] and total == 1.0
    with pytest.raises(ValueError, match="retail has no cost kind.*certificate"):
        make("retail", cost_weights={"certificate": 0.01})


# ---------------------------------------------------------------------------- telecom
def test_telecom_dual_control():
    env = make("telecom")
    task_id = "[mobile_data_issue]airplane_mode_on|data_mode_off[PERSONA:None]"
    env.reset(seed=0, options={"task": task_id, "user_script": [
        "My mobile data does not work.",
        {"name": "check_status_bar", "arguments": {}},
        {"name": "toggle_airplane_mode", "arguments": {}},
        {"name": "toggle_data", "arguments": {}},
        "Done, it works now.", "###STOP###"]})
    obs, _, _, _, info = env.step('{"name": "toggle_airplane_mode", "arguments": {}}')
    assert "tool of the user's own device" in obs and not info["format_ok"]
    obs, _, _, _, info = env.step("Please turn airplane mode off and mobile data on.")
    assert obs == "Done, it works now."
    calls = info["user_tool_calls"]
    assert [c["name"] for c in calls] == ["check_status_bar", "toggle_airplane_mode", "toggle_data"]
    assert "Airplane Mode" in calls[0]["content"] and not any(c["error"] for c in calls)
    # the agent sees none of the user's device actions, only the user's words
    assert [m["role"] for m in info["messages"][3:]] == ["assistant", "tool", "assistant", "user"]
    assert info["messages"][-1]["content"] == "Done, it works now."
    _, reward, term, _, info = env.step("Great! ###STOP###")
    assert term and reward == 1.0 and info["cost_total"] == 0.0
    assert all(c["met"] for c in info["reward_info"]["env_assertions"])
