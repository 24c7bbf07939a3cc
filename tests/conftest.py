"""Shared fixtures. Heavy ones (tiny model, real servers) are built once per session, lazily.

Warning policy: a ``DeprecationWarning``, ``PendingDeprecationWarning`` or ``FutureWarning`` that our
own code caused fails the test that raised it (the warning is raised as an exception where it was
issued), so that a deprecated API we call is replaced before it is removed. "Our code caused it"
means the line the warning points at (its ``stacklevel``) is in ``cmpo/`` or ``interactcs_gym/``, or
is call plumbing (``torch.nn.Module.__call__``, ``functools``/``contextlib`` wrappers) entered from
there: a deprecated keyword that ``cmpo`` passes to a model's ``forward`` points at
``torch/nn/modules/module.py``, whose caller is ours. pytest's ``filterwarnings`` ``module`` field
cannot say this (it matches only the module the warning points at). Deprecations inside libraries,
or caused by test code, are reported as usual. ``pytest.warns`` and ``recwarn`` still see warnings
they expect.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = tuple(f"{ROOT / name}/" for name in ("cmpo", "interactcs_gym"))
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _plumbing(filename: str) -> bool:
    """Call machinery between a caller and the function it calls."""
    module = sys.modules.get("torch.nn.modules.module")
    return filename in (functools.__file__, contextlib.__file__, getattr(module, "__file__", None))


def caused_by_our_code(filename: str, lineno: int, frame) -> bool:
    """Whether the warning pointing at ``filename:lineno``, issued below ``frame`` on the stack,
    comes from a line of our packages (directly or through call plumbing)."""
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    if frame is None:  # an explicit location (warn_explicit): judge by it alone
        return _ours(filename)
    while frame is not None and _plumbing(frame.f_code.co_filename):
        frame = frame.f_back
    return frame is not None and _ours(frame.f_code.co_filename)


def _ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(OUR_PACKAGES)


@contextlib.contextmanager
def our_deprecations_raise():
    """Within: deprecation warnings caused by our code are raised (see the module docstring)."""
    with warnings.catch_warnings():
        report = warnings.showwarning  # pytest's recorder

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DEPRECATIONS) and caused_by_our_code(filename, lineno, sys._getframe(1)):
                raise message if isinstance(message, Warning) else category(message)
            report(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with our_deprecations_raise():  # inside pytest's own warning capture (setup, call, teardown)
        return (yield)


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
    from cmpo.compat import reset_accelerate_state

    reset_accelerate_state()
    yield
    reset_accelerate_state()


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
