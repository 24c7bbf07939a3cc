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
