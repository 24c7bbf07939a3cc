"""Shared fixtures. Heavy ones (tiny model, real servers) are built once per session, lazily."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny local Qwen2 chat model folder (tokenizer trained on the project's text, random weights)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from cmpo.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a test that runs a trainer in this process starts
    from a clean one and leaves one (SFTConfig, for one, turns bf16 on by default). Modules use it
    with ``pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")``."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def voucher_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model taught the always-voucher agent's first FDS turn (``teach_opening_turn``,
    ~6 s): under temperature-1 sampling ~76 % of FDS-Hard-v0 sessions issue the voucher (cost 1)."""
    from cmpo.tiny_model import teach_opening_turn

    return str(teach_opening_turn(tiny_model_dir, tmp_path_factory.mktemp("voucher-model"),
                                  agent="always-voucher", env_id="FDS-Hard-v0", env_kwargs={"split": "train"}))


# ---------------------------------------------------------------------- LLM back-ends (issue 4)
@pytest.fixture(scope="session")
def chat_server(tiny_model_dir):
    """A real OpenAI-compatible server: ``transformers serve <tiny_model_dir>`` on a free loopback
    port (model forced), healthy before the first test that uses it, stopped at the end."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from chat_server import TransformersServer

    server = TransformersServer(tiny_model_dir).start()
    yield server
    server.stop()
