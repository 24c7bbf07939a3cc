"""gymnasium's ``check_env`` over every registered id that can be built here: no warning, nothing
printed. LLM-user FDS ids get an in-process back-end that always gives the same valid reply; τ² ids
need the official τ²-bench package (skipped without it) and run with its scripted user."""

from __future__ import annotations

import importlib.util
import json
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import interactcs_gym
from chat_stub import ScriptedBackend

REPLY = json.dumps({"utterance": "My order has a problem.", "satisfaction": 2, "end": "continue",
                    "share_photo": False})


def make(env_id: str) -> gym.Env:
    if env_id.startswith("Tau2-"):
        if importlib.util.find_spec("tau2") is None:
            pytest.skip("needs the official τ²-bench package (README: 'τ²-bench adapters')")
        return gym.make(env_id, user_simulator="scripted")
    if gym.spec(env_id).kwargs.get("user_simulator") == "llm":
        return gym.make(env_id, user_simulator_kwargs={"backend": ScriptedBackend(default=REPLY)})
    return gym.make(env_id)


@pytest.mark.parametrize("env_id", interactcs_gym.registered_ids())
def test_check_env_passes_silently(env_id, capsys):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    env.close()
    assert capsys.readouterr() == ("", "")


def test_every_registered_id_is_checked():
    assert {"FDS-Hard-v0", "FDS-Easy-v0", "FDS-Hard-LLM-v0", "FDS-Easy-LLM-v0", "Tau2-Retail-v0"} <= \
        set(interactcs_gym.registered_ids())
