"""The LLM user of the Tau2 envs through a chat back-end, and the scripted user."""

from __future__ import annotations

import pytest
from tau2_support import need_tau2, requires_tau2

from interactcs_gym.llm.base import ChatBackend, ChatBackendError

pytestmark = [pytest.mark.tau2, requires_tau2]

DATA_TASK = "[mobile_data_issue]airplane_mode_on|data_mode_off[PERSONA:None]"


class RecordingBackend(ChatBackend):
    """Answers with ``replies`` in order and records every request."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[tuple[list[dict], dict]] = []

    def chat(self, messages, **sampling):
        self.requests.append(([dict(m) for m in messages], dict(sampling)))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def make(domain, backend, **kw):
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    return Tau2Env(domain=domain, user_simulator="llm",
                   user_simulator_kwargs={"backend": backend, **kw})


def test_llm_user_speaks_from_the_official_prompt_with_roles_flipped():
    need_tau2()
    from tau2.user.user_simulator import get_global_user_sim_guidelines

    backend = RecordingBackend(["<think>be brief</think>I want to cancel an order.",
                                "It is #W1234567. ###STOP###"])
    env = make("retail", backend)
    obs, info = env.reset(seed=5, options={"task": "16"})
    assert obs == "I want to cancel an order."  # the think block never reaches the agent
    messages, sampling = backend.requests[0]
    assert sampling == {"temperature": 0.0, "seed": 5}
    assert messages[0]["role"] == "system"
    assert get_global_user_sim_guidelines(use_tools=False) in messages[0]["content"]
    scenario = str(env.tasks[16].user_scenario)
    assert scenario in messages[0]["content"] and "[tool result]" not in messages[0]["content"]
    assert messages[1:] == [{"role": "user", "content": "Hi! How can I help you today?"}]
    obs, _, term, _, info = env.step("Sure, which order?")
    messages, _ = backend.requests[1]
    assert messages[1:] == [{"role": "user", "content": "Hi! How can I help you today?"},
                            {"role": "assistant", "content": "I want to cancel an order."},
                            {"role": "user", "content": "Sure, which order?"}]
    assert term and info["termination_reason"] == "user_stop" and obs.endswith("###STOP###")


def test_llm_user_operates_its_device_tools_by_json():
    backend = RecordingBackend([
        "My mobile data is not working.",
        '{"name": "toggle_airplane_mode", "arguments": {}}',
        "I switched airplane mode off.",
    ])
    env = make("telecom", backend, sampling={"temperature": 0.7, "top_p": 0.9}, max_reasks=0)
    env.reset(seed=1, options={"task": DATA_TASK})
    system = backend.requests[0][0][0]["content"]
    assert "Using your tools in this conversation" in system and '"name": "toggle_data"' in system
    obs, _, _, _, info = env.step("Please turn airplane mode off.")
    assert obs == "I switched airplane mode off."
    [call] = info["user_tool_calls"]
    assert call["name"] == "toggle_airplane_mode" and call["error"] is False
    messages, sampling = backend.requests[2]
    assert sampling == {"temperature": 0.7, "top_p": 0.9, "seed": 1}
    assert messages[-2] == {"role": "assistant",
                            "content": '{"name": "toggle_airplane_mode", "arguments": {}}'}
    assert messages[-1] == {"role": "user", "content": f"[tool result] {call['content']}"}
    device = env._episode.environment.user_tools.db.device
    assert device.airplane_mode is False


def test_bad_user_replies_are_asked_again_then_end_the_episode():
    backend = RecordingBackend(["", "Hello, my data is off.",
                                '{"name": "format_disk", "arguments": {}}', "{oops", "",
                                "ok"])
    env = make("telecom", backend, max_reasks=2)
    obs, _ = env.reset(seed=0, options={"task": DATA_TASK})
    assert obs == "Hello, my data is off."
    assert "was empty" in backend.requests[1][0][-1]["content"]
    obs, reward, term, trunc, info = env.step("Can you check your status bar?")
    assert "You have no tool ['format_disk']" in backend.requests[3][0][-1]["content"]
    assert "not a valid tool call" in backend.requests[4][0][-1]["content"]
    assert trunc and not term and info["termination_reason"] == "simulator_error"
    assert "UserSimulatorError" in info["simulator_error"] and reward == 0.0
    assert info["tau2_metrics"]["pass"] == 0.0
    assert backend.replies == ["ok"]  # bounded: 1 + max_reasks tries per message


def test_back_end_failures_end_the_episode_or_refuse_the_reset():
    need_tau2()
    from interactcs_gym.tau2.users import UserSimulatorError

    env = make("retail", RecordingBackend(["hi", ChatBackendError("connection refused")]))
    env.reset(seed=0)
    _, reward, _, trunc, info = env.step("Hello!")
    assert trunc and info["termination_reason"] == "simulator_error" and reward == 0.0
    assert "connection refused" in info["simulator_error"]
    env = make("retail", RecordingBackend([ChatBackendError("connection refused")]))
    with pytest.raises(UserSimulatorError, match="could not open the conversation.*refused") as err:
        env.reset(seed=0)
    assert isinstance(err.value.__cause__, ChatBackendError)  # the CLI's backend_error


def test_unseeded_resets_draw_user_seeds_from_the_env_rng():
    backend = RecordingBackend(["a", "b", "c"])
    env = make("retail", backend)
    env.reset(seed=3)
    env.reset()
    env.reset()
    seeds = [r[1]["seed"] for r in backend.requests]
    assert seeds[0] == 3 and all(isinstance(s, int) for s in seeds) and seeds[1] != seeds[2]


def test_scripted_user_defaults_to_the_reason_for_calling_then_stops():
    need_tau2()
    from interactcs_gym.tau2.env import Tau2Env

    env = Tau2Env(domain="retail", user_simulator="scripted")
    obs, _ = env.reset(seed=0)
    assert obs == env.tasks[0].user_scenario.instructions.reason_for_call.strip()
    _, _, term, _, info = env.step("How can I help?")
    assert term and info["termination_reason"] == "user_stop"
    with pytest.raises(ValueError, match="unknown user_simulator_kwargs"):
        Tau2Env(domain="retail", user_simulator="scripted", user_simulator_kwargs={"model": "x"})
    with pytest.raises(ValueError, match="user_simulator must be one of"):
        Tau2Env(domain="retail", user_simulator="persona")


def test_seedless_requests_for_servers_without_seeds():
    backend = RecordingBackend(["hello"])
    make("retail", backend, seed_requests=False).reset(seed=3)
    assert backend.requests[0][1] == {"temperature": 0.0}


def test_llm_user_over_http_configured_like_the_fds_simulator(monkeypatch):
    """The default LLM user of a registered id, from INTERACTCS_USER_LLM_* settings, through the
    project's OpenAI-compatible client to a real (stdlib) HTTP server on loopback."""
    chat_stub = pytest.importorskip("chat_stub", reason="the LLM back-ends' test server")
    pytest.importorskip("openai")
    import gymnasium as gym

    import interactcs_gym  # noqa: F401

    script = ["ok:I want to return an item.", "ok:Thanks! ###STOP###"]
    with chat_stub.ChatStub(script=script) as stub:
        monkeypatch.setenv("INTERACTCS_USER_LLM_BASE_URL", stub.url)
        monkeypatch.setenv("INTERACTCS_USER_LLM_MODEL", "stub-model")
        monkeypatch.setenv("INTERACTCS_USER_LLM_API_KEY", "sk-user-test")
        env = gym.make("Tau2-Retail-v0")
        obs, _ = env.reset(seed=7)
        assert obs == "I want to return an item."
        obs, _, term, _, info = env.step("Which item would you like to return?")
        assert term and info["termination_reason"] == "user_stop" and obs == "Thanks! ###STOP###"
        env.close()
    first, second = stub.requests
    assert first["body"]["model"] == "stub-model" and first["body"]["seed"] == 7
    assert first["body"]["temperature"] == 0.0
    assert first["headers"]["authorization"] == "Bearer sk-user-test"
    assert [m["role"] for m in first["body"]["messages"]] == ["system", "user"]
    assert second["body"]["messages"][-1] == {"role": "user",
                                              "content": "Which item would you like to return?"}
