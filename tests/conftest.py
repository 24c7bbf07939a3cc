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
