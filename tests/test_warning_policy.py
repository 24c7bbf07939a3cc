"""The test suite's warning policy (tests/conftest.py): a deprecation that our code causes fails the
test; one that test code or a library causes does not."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cmpo import compat  # noqa: E402
from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for  # noqa: E402
from cmpo.engines.kv_cache import feed, new_cache  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def deprecated_cache_keyword(monkeypatch):
    """Our code passes caches as ``past_key_values=`` (deprecated for ``cache=``)."""
    monkeypatch.setattr(compat, "cache_keyword", lambda: "past_key_values")


@pytest.mark.usefixtures("deprecated_cache_keyword")
def test_a_deprecated_keyword_our_code_passes_to_forward_fails(tiny):
    """transformers points the warning at torch's ``Module.__call__``; its caller, ``feed``, is ours."""
    model, _ = tiny
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(FutureWarning, match="past_key_values"), torch.no_grad():
        feed(model, new_cache(model.config), ids, torch.ones_like(ids))


@pytest.mark.usefixtures("deprecated_cache_keyword")
def test_a_deprecated_keyword_our_code_passes_to_generate_fails(tiny):
    model, tok = tiny
    engine = make_engine("transformers", model, tok,
                         SamplingParams(max_new_tokens=2, greedy=True, stop_token_ids=stop_token_ids_for(tok)))
    with pytest.raises(FutureWarning, match="past_key_values"):
        engine.generate([[5, 6, 7]])


def test_a_deprecated_keyword_passed_by_test_code_is_only_reported(tiny):
    model, _ = tiny
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():  # would raise if the policy took this call for ours
        out = model(input_ids=ids, use_cache=True, past_key_values=new_cache(model.config))
    assert out.logits.shape[:2] == (1, 3)


def test_an_expected_deprecation_of_our_code_is_seen_by_pytest_warns():
    def deprecated_helper():
        warnings.warn("deprecated_helper is deprecated", DeprecationWarning, stacklevel=1)

    # the helper's code object lives in this test file; give it a cmpo/ file name
    code = deprecated_helper.__code__
    deprecated_helper.__code__ = code.replace(co_filename=compat.__file__)
    with pytest.deprecated_call(match="deprecated_helper"):
        deprecated_helper()
    with pytest.raises(DeprecationWarning, match="deprecated_helper"):
        deprecated_helper()
