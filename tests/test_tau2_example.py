"""The example config that trains CMPO on a τ² domain's train split is valid for the env (and for
cmpo.train's config, where that is installed)."""

from __future__ import annotations

import inspect
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import interactcs_gym  # noqa: F401
from interactcs_gym.tau2.costs import COST_KINDS
from interactcs_gym.tau2.env import Tau2Env

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cmpo_tau2_airline.yaml"
LLM_USER_KEYS = {"backend", "sampling", "max_reasks", "seed_requests", "base_url", "model",
                 "api_key", "timeout", "max_retries", "max_concurrency"}


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def test_example_env_settings_fit_the_env(config):
    spec = gym.spec(config["env_id"])
    kwargs = {**spec.kwargs, **config["env_kwargs"]}
    inspect.signature(Tau2Env).bind(**kwargs)  # raises on an unknown or misplaced argument
    assert kwargs["domain"] == "airline" and kwargs["split"] == "train"
    assert set(kwargs["cost_weights"]) <= set(COST_KINDS["airline"])
    assert set(kwargs["user_simulator_kwargs"]) <= LLM_USER_KEYS
    assert config["w_p"] == 0.0 and config["cost_limit"] == 0.5


def test_example_keys_are_cmpo_config_fields(config):
    cmpo_config = pytest.importorskip("cmpo.config", reason="needs cmpo's config (trl)")
    cmpo_config.check_keys(list(config), str(CONFIG))
    cmpo_config.CMPOConfig(**config)  # and its own validation
