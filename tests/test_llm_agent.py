"""LLMAgent: the env's messages go to the back-end unchanged, the reply comes back as the action."""

from __future__ import annotations

import pytest

from chat_stub import ChatStub, ScriptedBackend
from interactcs_gym.agents import load_agent
from interactcs_gym.agents.llm import LLMAgent
from interactcs_gym.llm import ChatBackendError

INFO = {"messages": [{"role": "system", "content": "SOP: verify first."},
                     {"role": "user", "content": "My food is cold!"}]}
REPLY = "<think>ask</think><response>Sorry! A photo please?</response><action>chat</action>"


def test_act_sends_the_env_messages():
    backend = ScriptedBackend([REPLY])
    agent = load_agent("llm", backend=backend)
    assert isinstance(agent, LLMAgent)
    agent.reset(seed=None)
    assert agent.act("My food is cold!", INFO) == REPLY
    assert backend.prompts == [INFO["messages"]]


def test_sampling_and_seed_per_turn_over_http():
    pytest.importorskip("openai")
    with ChatStub(default=f"ok:{REPLY}") as stub:
        agent = LLMAgent("openai", base_url=stub.url, model="policy", sampling={"max_tokens": 16})
        assert agent.name == "llm:policy"
        agent.reset(seed=10)
        agent.act("x", INFO)
        agent.act("x", INFO)
        bodies = [r["body"] for r in stub.requests]
        assert [b["seed"] for b in bodies] == [10, 11]
        assert bodies[0]["max_tokens"] == 16 and bodies[0]["temperature"] == 0.7
        assert bodies[0]["messages"] == INFO["messages"]


def test_act_batch_is_one_concurrent_call():
    pytest.importorskip("openai")
    with ChatStub(default="sleep:0.2", reply=lambda body: body["messages"][-1]["content"]) as stub:
        agent = LLMAgent("openai", base_url=stub.url, model="m")
        infos = [{"messages": [{"role": "user", "content": f"u{i}"}]} for i in range(3)]
        assert agent.act_batch(["u0", "u1", "u2"], infos) == ["u0", "u1", "u2"]
        assert stub.max_in_flight > 1


def test_backend_failure_is_raised_not_hidden():
    agent = LLMAgent(ScriptedBackend([ChatBackendError("server gone", kind="connection")]))
    with pytest.raises(ChatBackendError, match="server gone"):
        agent.act("x", INFO)


def test_needs_messages():
    with pytest.raises(ValueError, match="messages"):
        LLMAgent(ScriptedBackend()).act("x", {})
