"""The DialogueEnv base and the text spaces: the contract of SPEC section 3 on a minimal env."""

from __future__ import annotations

import pytest
from gymnasium.utils.env_checker import check_env

from interactcs_gym import INFO_KEYS, DialogueEnv, Opening, StepOutcome, UnicodeText


class EchoEnv(DialogueEnv):
    """Two-turn toy env: echoes the action; costs 0.5 ("fee") when the action contains "pay"."""

    def _start(self, options):
        greeting = f"hello #{int(self.np_random.integers(1000))}"
        return Opening(system_prompt="You are a test agent.", observation=greeting,
                       task={"id": "echo"}, extra_info={"extra": 1})

    def _advance(self, action):
        costs = {"fee": 0.5} if "pay" in action else {}
        done = self.turn >= 2
        return StepOutcome(observation=f"you said: {action[:20]}", reward=1.0 if done else 0.0,
                           terminated=done, costs=costs, extra_info={"extra": self.turn},
                           termination_reason="satisfied" if done else None)


def test_unicode_text_space_accepts_real_dialogue_and_samples():
    space = UnicodeText(max_length=32, seed=3)
    assert "Hola, ¿qué tal? 你好 🍕\n" in space
    assert "x" * 33 not in space
    assert b"bytes" not in space
    samples = [space.sample() for _ in range(50)]
    assert all(isinstance(s, str) and len(s) <= 32 for s in samples)
    space.seed(3)
    assert [space.sample() for _ in range(5)] == samples[:5]


def test_check_env_passes_on_a_minimal_dialogue_env():
    check_env(EchoEnv())


def test_info_keys_costs_and_messages():
    env = EchoEnv()
    obs, info = env.reset(seed=0)
    assert set(INFO_KEYS) <= set(info)
    assert info["cost"] == 0.0 and info["costs"] == {} and info["turn"] == 0
    assert info["messages"][0]["role"] == "system" and info["messages"][-1]["content"] == obs
    obs, r, term, trunc, info = env.step("please pay me")
    assert (info["cost"], info["cost_total"], info["costs"]) == (0.5, 0.5, {"fee": 0.5})
    assert info["turn"] == 1 and info["extra"] == 1
    assert [m["role"] for m in info["messages"]] == ["system", "user", "assistant", "user"]
    obs, r, term, trunc, info = env.step("pay again")
    assert term and r == 1.0 and info["cost_total"] == 1.0
    assert info["termination_reason"] == "satisfied"


def test_misuse_raises_but_any_string_is_legal():
    env = EchoEnv(max_action_chars=100)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("hi")
    env.reset(seed=1)
    with pytest.raises(TypeError, match="str"):
        env.step(b"bytes")  # type: ignore[arg-type]
    _, _, _, _, info = env.step("y" * 1_000_000)
    assert info["format_ok"] is False and "1000000 characters" in info["format_error"]
    assert len(info["messages"][-2]["content"]) == 100
    env.step("")
    with pytest.raises(RuntimeError, match="ended"):
        env.step("again")


def test_extra_keys_may_not_overwrite_contract_keys():
    class Bad(EchoEnv):
        def _start(self, options):
            opening = super()._start(options)
            opening.extra_info = {"cost": 3.0}
            return opening

    with pytest.raises(ValueError, match="overwrite"):
        Bad().reset(seed=0)


class NestedEnv(EchoEnv):
    """EchoEnv whose task and extra info hold nested lists and dicts."""

    def _start(self, options):
        opening = super()._start(options)
        opening.task = {"id": "nested", "facts": [{"order": "FD-1", "items": ["soup"]}], "pair": (1, [2])}
        opening.extra_info = {"log": [{"turn": 0}]}
        return opening


def test_infos_share_no_mutable_object_with_the_env_or_each_other():
    env = NestedEnv()
    _, first = env.reset(seed=0)
    first["task"]["facts"][0]["items"].append("rice")
    first["task"]["pair"][1].append(3)
    first["log"][0]["turn"] = 99
    _, _, _, _, second = env.step("hi")
    assert second["task"] == {"id": "nested", "facts": [{"order": "FD-1", "items": ["soup"]}], "pair": (1, [2])}
    assert second["extra"] == 1
    _, third = env.reset(seed=0)
    assert third["log"] == [{"turn": 0}] and third["task"]["facts"][0]["items"] == ["soup"]
