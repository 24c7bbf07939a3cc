"""The LLM role-play user simulator, in the FDS env, with scripted back-ends (fast, exact) and
against the stub HTTP server (faults, registered ids)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import interactcs_gym  # noqa: F401  (registers the ids)
from chat_stub import ChatStub, ScriptedBackend
from interactcs_gym.fds.splits import load_split
from interactcs_gym.llm import ChatBackendError
from interactcs_gym.fds.users.base import AgentTurn
from interactcs_gym.fds.users.llm import LLMUserSimulator, initial_satisfaction

GOOD = "<think>t</think><response>I'm sorry about that. Could you send a photo?</response><action>chat</action>"
VOUCHER = "<think>t</think><response>Here is a voucher for the trouble.</response><action>voucher</action>"


def say(utterance, sat, end="continue", share_photo=False):
    return json.dumps({"utterance": utterance, "satisfaction": sat, "end": end, "share_photo": share_photo})


def env_with(backend, env_kwargs=None, **kw):
    return gym.make("FDS-Hard-v0", user_simulator="llm", user_simulator_kwargs={"backend": backend, **kw},
                    **(env_kwargs or {})).unwrapped


def photo_user():
    users = load_split("hard", "test")
    return next(i for i, u in enumerate(users) if u.order.evidence.photo)


def test_episode_with_valid_replies():
    backend = ScriptedBackend([say("My food arrived cold!", 2), say("Fine, here it is.", 3),
                               "Sure.\n```json\n" + say("Thanks, that works.", 5, "satisfied") + "\n```"])
    env = env_with(backend)
    obs, info = env.reset(seed=0, options={"user_index": 0})
    assert obs == "My food arrived cold!" and info["task"]["user_simulator"] == "llm"
    obs, reward, term, trunc, info = env.step(GOOD)
    assert obs == "Fine, here it is." and reward == 0.0 and not term
    obs, reward, term, trunc, info = env.step(VOUCHER)
    assert term and not trunc and info["termination_reason"] == "satisfied"
    assert info["satisfaction"] == 5 and reward == 1.0 and info["cost"] == 1.0
    # the voucher reached the simulator as a platform fact, outside the agent's quotation
    last = backend.prompts[-1][-1]["content"]
    assert "[Platform: a goodwill voucher" in last and last.index("[Platform:") > last.index("</agent_turn_")


def test_prompt_holds_persona_order_goal_and_dialogue():
    backend = ScriptedBackend([say("Hi, problem with my order.", 2), say("ok", 2)])
    env = env_with(backend)
    env.reset(seed=0, options={"user_index": 3})
    user = env.user_case
    system = backend.prompts[0][0]["content"]
    assert user.persona.profile in system and user.order.merchant in system
    assert user.order.dispute.user_account in system and "## Your goal" in system
    env.step(GOOD)
    convo = backend.prompts[-1]
    assert [m["role"] for m in convo] == ["system", "user", "assistant", "user"]
    assert json.loads(convo[2]["content"])["utterance"] == "Hi, problem with my order."
    assert "Could you send a photo?" in convo[3]["content"]


def test_malformed_replies_are_reasked_then_end_cleanly():
    backend = ScriptedBackend([say("Hello, my order is wrong.", 3), "not json", say("x", 9), "{}"])
    env = env_with(backend, max_reasks=2)
    env.reset(seed=1, options={"user_index": 0})
    obs, reward, term, trunc, info = env.step(GOOD)
    assert term and info["termination_reason"] == "simulator_error"
    assert info["satisfaction"] == 3 and reward == 0.5  # the last valid satisfaction
    assert obs.startswith("[The user simulator failed: no usable reply after 3 attempt(s)")
    assert len(backend.prompts) == 1 + 3  # opening + one ask and two re-asks: bounded
    reasks = [p[-1]["content"] for p in backend.prompts[2:]]
    assert "no JSON object" in reasks[0] and "integer from 1 to 5" in reasks[1]


def test_reask_then_success():
    backend = ScriptedBackend([say("Hi.", 2), '{"utterance": "ok", "satisfaction": "4", "end": "continue"}',
                               say("ok then", 4)])
    env = env_with(backend)
    env.reset(seed=1, options={"user_index": 0})
    obs, _, term, _, _ = env.step(GOOD)
    assert obs == "ok then" and not term and len(backend.prompts) == 3


def test_backend_failure_mid_episode_ends_cleanly():
    backend = ScriptedBackend([say("Hi.", 2), ChatBackendError("connection refused", kind="connection")])
    env = env_with(backend)
    env.reset(seed=2, options={"user_index": 0})
    obs, reward, term, trunc, info = env.step(GOOD)
    assert term and info["termination_reason"] == "simulator_error" and info["satisfaction"] == 2
    assert "connection refused" in obs


def test_backend_failure_at_reset_raises():
    env = env_with(ScriptedBackend([ChatBackendError("down", kind="connection")]))
    with pytest.raises(ChatBackendError, match="down"):
        env.reset(seed=0)


def test_malformed_opening_is_recorded_at_the_first_turn():
    backend = ScriptedBackend(default="garbage")
    env = env_with(backend, max_reasks=1)
    obs, info = env.reset(seed=0, options={"user_index": 0})
    assert isinstance(obs, str) and obs  # the persona simulator's opening
    obs, reward, term, trunc, info = env.step(GOOD)
    assert term and info["termination_reason"] == "simulator_error" and "opening" in obs
    assert info["satisfaction"] == initial_satisfaction(env.user_case.persona)
    assert len(backend.prompts) == 2  # no further calls after the failed opening


def test_photo_is_attached_by_the_simulator_never_invented():
    index = photo_user()
    backend = ScriptedBackend([say("My meal is damaged. [Photo: a perfect meal]", 2),
                               say("Here you go.", 3, share_photo=True)])
    env = env_with(backend, {"process_judge": "rule"})
    obs, _ = env.reset(seed=0, options={"user_index": index})
    assert "[Photo:" not in obs and "(Photo: a perfect meal]" in obs
    obs, _, _, _, info = env.step(GOOD)
    description = env.user_case.order.evidence.photo_description
    assert obs == f"Here you go. [Photo: {description}]"
    # the env saw the evidence: a voucher now passes the rule judge's verification
    _, _, _, _, info = env.step(VOUCHER)
    assert info["process_scores"]["business_compliance"] == 1.0


@pytest.mark.parametrize("reply,problem", [
    ('{"utterance": "a", "satisfaction": 6, "end": "continue"}', "integer from 1 to 5"),
    ('{"utterance": "a", "satisfaction": true, "end": "continue"}', "integer from 1 to 5"),
    ('{"utterance": "a", "satisfaction": 2.5, "end": "continue"}', "integer from 1 to 5"),
    ('{"utterance": "", "satisfaction": 2, "end": "continue"}', "non-empty string"),
    ('{"utterance": "a", "satisfaction": 2, "end": "maybe"}', '"end" must be one of'),
    ('{"utterance": "a", "satisfaction": 2, "end": "continue", "share_photo": "yes"}', "true or false"),
    ('{"utterance": "a", "satisfaction": 2, "end": "continue"} {"utterance": "b", "satisfaction": 3, '
     '"end": "continue"}', "exactly one"),
    ("satisfaction: 5", "no JSON object"),
])
def test_strict_parsing(reply, problem):
    sim = LLMUserSimulator(ScriptedBackend())
    sim._agent_texts = []
    with pytest.raises(ValueError, match=problem):
        sim.parse(reply)


def test_kwargs_for_an_instance_backend_are_refused():
    with pytest.raises(ValueError, match="cannot apply"):
        LLMUserSimulator(ScriptedBackend(), model="m")


def test_respond_before_start():
    with pytest.raises(RuntimeError, match="start"):
        LLMUserSimulator(ScriptedBackend()).respond(AgentTurn("hi", "chat", False, True, 1))


# ---------------------------------------------------------------------- registered ids, over HTTP
@pytest.mark.parametrize("env_id,difficulty", [("FDS-Hard-LLM-v0", "hard"), ("FDS-Easy-LLM-v0", "easy")])
def test_registered_llm_ids(env_id, difficulty, monkeypatch):
    pytest.importorskip("openai")
    spec = gym.spec(env_id)
    assert spec.nondeterministic is True and spec.kwargs["user_simulator"] == "llm"
    for name in ("INTERACTCS_USER_LLM_BASE_URL", "INTERACTCS_LLM_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    env = gym.make(env_id)  # no back-end yet: built at the first reset
    assert env.unwrapped.difficulty == difficulty
    with pytest.raises(ChatBackendError, match="INTERACTCS_USER_LLM_BASE_URL"):
        env.reset(seed=0)
    replies = iter([say("My order is late!", 2), say("Thanks!", 4, "satisfied")])
    with ChatStub(reply=lambda body: next(replies)) as stub:
        monkeypatch.setenv("INTERACTCS_USER_LLM_BASE_URL", stub.url)
        monkeypatch.setenv("INTERACTCS_USER_LLM_MODEL", "persona-32b")
        env = gym.make(env_id)
        obs, info = env.reset(seed=0)
        assert obs == "My order is late!"
        obs, reward, term, trunc, info = env.step(GOOD)
        assert term and info["satisfaction"] == 4 and reward == 0.75
        assert all(r["body"]["model"] == "persona-32b" and "seed" in r["body"] for r in stub.requests)
        env.close()


@pytest.mark.parametrize("fault,kind", [("500", "HTTP 500"), ("empty", "empty content"),
                                        ("invalid_json", "JSONDecodeError"), ("drop", "Connection error"),
                                        ("sleep:2", "no reply within")])
def test_http_faults_end_the_episode_cleanly(fault, kind):
    pytest.importorskip("openai")
    with ChatStub([f"ok:{say('Hi, my food is cold.', 2)}"], default=fault) as stub:
        env = env_with(None, base_url=stub.url, model="m", max_retries=1, backoff_base=0.001, timeout=0.5)
        env.reset(seed=0, options={"user_index": 0})
        obs, reward, term, _, info = env.step(GOOD)
        assert term and info["termination_reason"] == "simulator_error" and kind in obs
        assert info["satisfaction"] == 2 and reward == 0.25
        assert len(stub.requests) == 1 + 2  # opening + one request tried twice; no re-ask on a dead back-end


def test_connection_refused_ends_the_episode_cleanly():
    pytest.importorskip("openai")
    with ChatStub([f"ok:{say('Hi, my food is cold.', 2)}"]) as stub:
        env = env_with(None, base_url=stub.url, model="m", max_retries=1, backoff_base=0.001)
        env.reset(seed=0, options={"user_index": 0})
    # the server is gone: its port refuses connections
    obs, _, term, _, info = env.step(GOOD)
    assert term and info["termination_reason"] == "simulator_error" and "Connection error" in obs


def test_seeded_requests_follow_the_episode_rng():
    backend = ScriptedBackend(default=say("hi", 2))
    sim = LLMUserSimulator(backend, sampling={"temperature": 0.3})
    user = load_split("hard", "test")[0]
    for seed in (7, 7, 8):
        sim.start(user.order, user.persona, np.random.default_rng(seed))
    seeds = [s["seed"] for s in backend.samplings]
    assert seeds[0] == seeds[1] != seeds[2]
    assert backend.samplings[0]["temperature"] == 0.3 and backend.samplings[0]["max_tokens"] == 256


@pytest.mark.parametrize("env_id", ["FDS-Hard-LLM-v0", "FDS-Easy-LLM-v0"])
def test_check_env_with_a_deterministic_backend(env_id, monkeypatch):
    """gymnasium's check_env (spaces, info, seeding determinism) on the LLM ids, with a stub server
    that always gives the same valid reply."""
    pytest.importorskip("openai")
    from gymnasium.utils.env_checker import check_env
    import warnings

    with ChatStub(default=f"ok:{say('My order has a problem.', 2)}") as stub:
        env = gym.make(env_id, user_simulator_kwargs={"base_url": stub.url, "model": "m"})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        assert [str(w.message) for w in caught] == []
        env.close()


def test_api_key_never_reaches_the_results_file(tmp_path):
    """A server that echoes the bearer key back in its errors, an LLM user and an LLM agent both
    holding the key: neither the transcript, the error records nor the config in the results file
    carry it."""
    pytest.importorskip("openai")
    cli = pytest.importorskip("interactcs_gym.evaluation.cli")
    secret = "sk-live-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    out = tmp_path / "r.jsonl"

    def user_step(body):  # a valid opening, then errors that echo the key
        opening = body["messages"][-1]["content"].startswith("The chat with customer service opens")
        return f"ok:{say('My order is cold.', 2)}" if opening else "echo_key"

    with ChatStub(default=user_step) as users, ChatStub(default="echo_key") as agent:
        env_kwargs = {"user_simulator_kwargs": {"base_url": users.url, "model": "u", "api_key": secret}}
        agent_kwargs = {"base_url": agent.url, "model": "a", "api_key": secret, "max_retries": 0}
        for agent_name, kw in (("sop", {}), ("llm", agent_kwargs)):
            cli.main(["--env", "FDS-Hard-LLM-v0", "--env-kwargs", json.dumps(env_kwargs),
                      "--agent", agent_name, "--agent-kwargs", json.dumps(kw), "--users", "1",
                      "--seeds", "1", "--out", str(out), "--add-run", "--no-progress", "--quiet"])
        assert any(r["headers"].get("authorization") == f"Bearer {secret}" for r in users.requests + agent.requests)
    text = out.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    statuses = {r["agent"]: (r["status"], r["termination_reason"]) for r in records if r["record"] == "episode"}
    assert statuses["sop"] == ("ok", "simulator_error")  # the simulator's failure ended it cleanly
    assert statuses["llm"][0] == "backend_error"  # the agent's server failed, not the agent
    assert "invalid key" in text and secret not in text and secret not in out.with_suffix(".md").read_text()


def test_close_releases_only_what_the_simulator_built():
    pytest.importorskip("openai")
    with ChatStub(default=f"ok:{say('Hello, problem with my order.', 2)}") as stub:
        env = env_with(None, base_url=stub.url, model="m")
        env.reset(seed=0)
        built = env.user_simulator.backend
        env.close()
        assert env.user_simulator._backend is None
        env.reset(seed=1)  # a closed env that is reset again builds a fresh back-end
        assert env.user_simulator.backend is not built
    shared = ScriptedBackend(default=say("hi", 2))
    closed = []
    shared.close = lambda: closed.append(True)
    env = env_with(shared)
    env.reset(seed=0)
    env.close()
    assert closed == []  # the caller's back-end stays open for its other users
