"""Chat back-ends: settings, factory, and the HTTP client's fault handling against a scripted stub."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from chat_server import free_port
from chat_stub import ChatStub
from interactcs_gym.llm import ChatBackend, ChatBackendError, make_backend
from interactcs_gym.llm.settings import resolve, setting_names

pytest.importorskip("openai")

HI = [{"role": "user", "content": "hi"}]
SECRET = "sk-test-4f1c9a7e2b3d5c6a8e9f0a1b"


def http(url, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    return make_backend("openai", base_url=url, **kw)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for field in ("BACKEND", "BASE_URL", "MODEL", "API_KEY", "TIMEOUT", "MAX_RETRIES", "MAX_CONCURRENCY"):
        for name in setting_names(field, "user"):
            monkeypatch.delenv(name, raising=False)
        for role in ("judge", "agent"):
            monkeypatch.delenv(f"INTERACTCS_{role.upper()}_LLM_{field}", raising=False)


# ---------------------------------------------------------------------- settings and factory
def test_settings_precedence(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai-fallback/v1")
    assert resolve("BASE_URL", role="judge") == "http://openai-fallback/v1"
    monkeypatch.setenv("INTERACTCS_LLM_BASE_URL", "http://shared/v1")
    assert resolve("BASE_URL", role="judge") == "http://shared/v1"
    monkeypatch.setenv("INTERACTCS_JUDGE_LLM_BASE_URL", "http://judge/v1")
    assert resolve("BASE_URL", role="judge") == "http://judge/v1"
    assert resolve("BASE_URL", role="user") == "http://shared/v1"
    assert resolve("BASE_URL", "http://kwarg/v1", role="judge") == "http://kwarg/v1"
    assert setting_names("MODEL", "agent") == ["INTERACTCS_AGENT_LLM_MODEL", "INTERACTCS_LLM_MODEL"]
    with pytest.raises(ValueError, match="unknown role"):
        resolve("MODEL", role="critic")


def test_backend_from_environment(monkeypatch):
    with ChatStub(default="ok:from env") as stub:
        monkeypatch.setenv("INTERACTCS_USER_LLM_BASE_URL", stub.url)
        monkeypatch.setenv("INTERACTCS_USER_LLM_MODEL", "persona-model")
        monkeypatch.setenv("INTERACTCS_LLM_TIMEOUT", "7.5")
        backend = make_backend(role="user")
        assert backend.timeout == 7.5 and backend.model == "persona-model"
        assert backend.chat(HI) == "from env"
        assert stub.requests[0]["body"]["model"] == "persona-model"
        monkeypatch.setenv("INTERACTCS_LLM_MAX_RETRIES", "three")
        with pytest.raises(ValueError, match="INTERACTCS_LLM_MAX_RETRIES"):
            make_backend(role="user")


def test_factory_forms():
    with ChatStub() as stub:
        backend = make_backend({"backend": "http", "base_url": stub.url, "model": "x"})
        assert backend.chat(HI) == "stub reply"
        assert make_backend(backend) is backend
        assert make_backend("interactcs_gym.llm.openai_backend:OpenAIChatBackend",
                            base_url=stub.url, model="x").chat(HI) == "stub reply"
    with pytest.raises(ValueError, match="unknown chat back-end"):
        make_backend("nope")
    with pytest.raises(ValueError, match="cannot apply"):
        make_backend(backend, model="other")


def test_missing_base_url_is_a_config_error():
    with pytest.raises(ChatBackendError, match="INTERACTCS_LLM_BASE_URL") as err:
        make_backend("openai", model="m")
    assert err.value.kind == "config"


def test_model_detected_from_server():
    with ChatStub() as stub:
        backend = make_backend("openai", base_url=stub.url)
        assert backend.chat(HI) == "stub reply"
        assert backend.model == "stub-model" and stub.requests[0]["body"]["model"] == "stub-model"


def test_sampling_arguments_are_passed():
    with ChatStub() as stub:
        backend = http(stub.url, sampling={"temperature": 0.2, "max_tokens": 9})
        backend.chat(HI, top_k=5, seed=3, max_tokens=4)
        body = stub.requests[0]["body"]
        assert body["temperature"] == 0.2 and body["max_tokens"] == 4 and body["seed"] == 3
        assert body["top_k"] == 5  # vLLM-style argument travels in extra_body
        assert body["messages"] == HI


def test_import_is_light():
    code = ("import sys, interactcs_gym, interactcs_gym.llm, interactcs_gym.judges, "
            "interactcs_gym.agents.llm; "
            "print('torch' in sys.modules, 'openai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------- faults
@pytest.mark.parametrize("fault,kind", [("500", "http_status"), ("429", "http_status"),
                                        ("empty", "empty"), ("no_choices", "invalid_response"),
                                        ("invalid_json", "invalid_response"), ("drop", "connection")])
def test_fault_is_retried_then_typed_error(fault, kind):
    with ChatStub(default=fault) as stub:
        with pytest.raises(ChatBackendError) as err:
            http(stub.url, max_retries=2).chat(HI)
        assert err.value.kind == kind and err.value.attempts == 3
        assert len(stub.requests) == 3  # bounded: 1 + max_retries, no hidden retries underneath


@pytest.mark.parametrize("fault", ["500", "empty", "invalid_json", "drop"])
def test_transient_fault_recovers(fault):
    with ChatStub([fault, fault], default="ok:recovered") as stub:
        assert http(stub.url, max_retries=2).chat(HI) == "recovered"
        assert len(stub.requests) == 3


def test_client_error_is_not_retried():
    with ChatStub(default="400") as stub:
        with pytest.raises(ChatBackendError) as err:
            http(stub.url, max_retries=3).chat(HI)
        assert err.value.status_code == 400 and err.value.attempts == 1 and len(stub.requests) == 1


def test_connection_refused():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(ChatBackendError) as err:
        http(url, max_retries=1).chat(HI)
    assert err.value.kind == "connection" and err.value.attempts == 2


def test_timeout():
    with ChatStub(default="sleep:2") as stub:
        with pytest.raises(ChatBackendError) as err:
            http(stub.url, max_retries=1, timeout=0.3).chat(HI)
        assert err.value.kind == "timeout" and err.value.attempts == 2 and len(stub.requests) == 2


def test_backoff_is_exponential_and_capped():
    with ChatStub() as stub:
        b = http(stub.url, backoff_base=0.5, backoff_max=3.0)
    delays = [b._delay(k, None) for k in (1, 2, 3, 4)]
    for got, base in zip(delays, (0.5, 1.0, 2.0, 3.0)):
        assert base <= got <= base * 1.25 or (base == 3.0 and got == 3.0)
    assert b._delay(1, 2.0) == 2.0 and b._delay(1, 60.0) == 3.0  # Retry-After, capped


def test_chat_batch_is_concurrent_and_ordered():
    with ChatStub(default="sleep:0.3", reply=lambda body: body["messages"][0]["content"].upper()) as stub:
        batch = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
        assert http(stub.url, max_concurrency=4).chat_batch(batch) == ["Q0", "Q1", "Q2", "Q3"]
        assert stub.max_in_flight > 1
    with ChatStub(default="sleep:0.05") as stub:
        http(stub.url, max_concurrency=1).chat_batch(batch)
        assert stub.max_in_flight == 1


def test_chat_batch_raises_the_failure():
    with ChatStub(["ok", "400"], default="ok") as stub:
        with pytest.raises(ChatBackendError):
            http(stub.url, max_concurrency=1).chat_batch([HI, HI, HI])


# ---------------------------------------------------------------------- secrets
def test_api_key_never_leaks(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    with ChatStub(["500", "echo_key"]) as stub:
        backend = http(stub.url, api_key=SECRET, max_retries=3)
        assert SECRET not in repr(backend) and "***" in repr(backend)
        with pytest.raises(ChatBackendError) as err:
            backend.chat(HI)
        assert stub.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"  # it was sent
        assert "invalid key" in str(err.value)  # the server's message is kept, redacted
    text = str(err.value) + repr(err.value) + "".join(r.getMessage() for r in caplog.records)
    assert SECRET not in text
    chain, exc = [], err.value  # no exception in the chain carries the key either
    while exc is not None:
        chain.append(f"{exc!r} {exc}")
        exc = exc.__cause__ or exc.__context__
    assert SECRET not in " ".join(chain)
    # the key from the environment is redacted the same way
    monkeypatch.setenv("INTERACTCS_LLM_API_KEY", SECRET)
    with ChatStub(default="echo_key") as stub:
        with pytest.raises(ChatBackendError) as err:
            http(stub.url).chat(HI)
    assert SECRET not in str(err.value)


def test_credentials_in_url_are_hidden():
    b = make_backend("openai", base_url="http://user:hunter2@127.0.0.1:9/v1", model="m")
    assert "hunter2" not in repr(b)


def test_custom_backend_instance_default_batch():
    class Upper(ChatBackend):
        def chat(self, messages, **sampling):
            return messages[-1]["content"].upper()

    assert Upper().chat_batch([HI, [{"role": "user", "content": "yo"}]]) == ["HI", "YO"]
