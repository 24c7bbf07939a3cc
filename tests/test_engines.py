"""Rollout engines: the transformers engine on the tiny model, and everything around vLLM that
runs without CUDA (the missing-package error, argument building, weight-sync call sequence)."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cmpo.engines import Generation, SamplingParams, cut_at_stop, make_engine, stop_token_ids_for  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, tok


def _prompt(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   tokenize=True, return_dict=False)


def _forward_logprobs(model, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def test_stop_tokens_of_chatml_tokenizer(tiny):
    model, tok = tiny
    assert stop_token_ids_for(tok, model.generation_config) == (tok.convert_tokens_to_ids("<|im_end|>"),)


def test_cut_at_stop_keeps_the_stop_token():
    assert cut_at_stop([5, 6, 2, 0, 0], [-1.0, -2.0, -3.0, 0.0, 0.0], (2,)) == \
        Generation([5, 6, 2], [-1.0, -2.0, -3.0], "stop")
    assert cut_at_stop([5, 6], [-1.0, -2.0], (2,)).finish_reason == "length"


@pytest.mark.parametrize("greedy,temperature,top_k", [(True, 1.0, 0), (False, 0.7, 0), (False, 1.3, 20)])
def test_transformers_engine_logprobs_are_those_of_the_sampled_tokens(tiny, greedy, temperature, top_k):
    model, tok = tiny
    sampling = SamplingParams(max_new_tokens=12, temperature=temperature, top_k=top_k, greedy=greedy,
                              stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("transformers", model, tok, sampling)
    prompts = [_prompt(tok, "hello"), _prompt(tok, "a much longer prompt with several words in it"),
               _prompt(tok, "x")]
    torch.manual_seed(0)
    gens = engine.generate(prompts)
    assert len(gens) == 3
    for prompt, gen in zip(prompts, gens):
        assert 1 <= len(gen.token_ids) <= 12
        if top_k:  # top-k renormalises over the k best: check against that distribution
            continue
        expected = _forward_logprobs(model, prompt, gen.token_ids, 1.0 if greedy else temperature)
        assert torch.allclose(expected, torch.tensor(gen.logprobs), atol=1e-4)


def test_transformers_engine_top_k_logprobs_renormalise(tiny):
    model, tok = tiny
    sampling = SamplingParams(max_new_tokens=6, top_k=5, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("transformers", model, tok, sampling)
    torch.manual_seed(1)
    prompt = _prompt(tok, "hello")
    gen = engine.generate([prompt])[0]
    ids = torch.tensor([prompt + gen.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1]
    top = torch.topk(logits, 5, dim=-1)
    for j, token in enumerate(gen.token_ids):
        assert token in top.indices[j].tolist()  # sampled from the top 5 only
        k = top.indices[j].tolist().index(token)
        assert gen.logprobs[j] == pytest.approx(torch.log_softmax(top.values[j], -1)[k].item(), abs=1e-4)


def test_transformers_engine_without_top_k_samples_from_the_whole_vocabulary(tiny):
    """top_k = 0 means no top-k: transformers' default top-k (50) must not sneak in after the
    log-prob recorder (the recorded log-probs would then not be those of the sampling distribution)."""
    model, tok = tiny
    engine = make_engine("transformers", model, tok,
                         SamplingParams(max_new_tokens=24, stop_token_ids=(10**6,)))
    torch.manual_seed(0)
    prompts = [_prompt(tok, "hello"), _prompt(tok, "x"), _prompt(tok, "a third prompt")]
    ranks = []
    for prompt, gen in zip(prompts, engine.generate(prompts)):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + gen.token_ids])).logits[0, len(prompt) - 1:-1]
        token_logits = logits.gather(1, torch.tensor(gen.token_ids)[:, None])
        ranks += (logits > token_logits).sum(-1).tolist()
    assert max(ranks) >= 50, ranks  # a random model spreads its mass: some draws fall outside the top 50


def test_transformers_engine_stops_at_end_of_turn(tiny):
    model, tok = tiny
    prompt = _prompt(tok, "hello")
    free = make_engine("transformers", model, tok,
                       SamplingParams(max_new_tokens=10, greedy=True, stop_token_ids=(10**6,)))
    tokens = free.generate([prompt])[0].token_ids
    stop = tokens[3]  # pretend the 4th greedy token ends a turn
    engine = make_engine("transformers", model, tok,
                         SamplingParams(max_new_tokens=10, greedy=True, stop_token_ids=(stop,)))
    gen = engine.generate([prompt, _prompt(tok, "another prompt")])[0]
    assert gen.finish_reason == "stop"
    assert gen.token_ids == tokens[:tokens.index(stop) + 1]


def test_transformers_engine_batched_equals_one_at_a_time_greedy(tiny):
    model, tok = tiny
    sampling = SamplingParams(max_new_tokens=16, greedy=True, stop_token_ids=stop_token_ids_for(tok))
    batched = make_engine("transformers", model, tok, sampling)
    single = make_engine("transformers", model, tok, sampling, max_batch_size=1)
    prompts = [_prompt(tok, t) for t in ("hi", "the order arrived cold and late", "refund please now")]
    a, b = batched.generate(prompts), single.generate(prompts)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for x, y in zip(a, b):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_engine_rejects_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="stop_token_ids"):
        make_engine("transformers", model, tok, SamplingParams())
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("tgi", model, tok, SamplingParams(stop_token_ids=(1,)))
    sampling = SamplingParams(stop_token_ids=(1,))
    with pytest.raises(TypeError, match="mode"):  # a vLLM setting given to transformers is not dropped
        make_engine("transformers", model, tok, sampling, mode="colocate")
    engine = make_engine("transformers", model, tok, sampling, compaction=False, join_turns=False)
    assert (engine.compaction, engine.join_turns) == (False, False)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0)


# -- vLLM ------------------------------------------------------------------------------------------
from cmpo.engines.vllm_engine import VLLMEngine, require_vllm, vllm_generation_kwargs  # noqa: E402

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_choosing_vllm_without_it_says_what_to_install(tiny):
    model, tok = tiny
    with pytest.raises(ImportError, match=r'pip install "interactcs-rl\[vllm\]"'):
        require_vllm()
    with pytest.raises(ImportError, match=r'pip install "interactcs-rl\[vllm\]"'):
        make_engine("vllm", model, tok, SamplingParams(stop_token_ids=(2,)), accelerator=None)


def test_vllm_generation_kwargs():
    sampling = SamplingParams(max_new_tokens=64, temperature=0.8, top_p=0.9, top_k=10, stop_token_ids=(2, 7))
    kw = vllm_generation_kwargs(sampling, mode="server", server_base_url="http://h:1", gpu_memory_utilization=0.5)
    assert kw["mode"] == "server" and kw["server_base_url"] == "http://h:1"
    assert (kw["temperature"], kw["top_p"], kw["top_k"]) == (0.8, 0.9, 10)
    assert kw["max_completion_length"] == 64 and kw["logprobs"] == 0
    assert kw["generation_kwargs"] == {"stop_token_ids": [2, 7]}
    assert kw["gpu_memory_utilization"] == 0.5
    greedy = vllm_generation_kwargs(SamplingParams(greedy=True, temperature=0.5, stop_token_ids=(2,)))
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, 0)
    with pytest.raises(ValueError, match="vllm_mode"):
        vllm_generation_kwargs(sampling, mode="remote")
    # every key is an argument of TRL's VLLMGeneration
    import inspect

    from trl.generation.vllm_generation import VLLMGeneration

    assert set(kw) <= set(inspect.signature(VLLMGeneration.__init__).parameters)


class FakeGeneration:
    """TRL's VLLMGeneration interface, recording calls."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, images, num_generations):
        self.calls.append(("generate", [list(p) for p in prompts], images, num_generations))
        completions = [[11, 12, 2], [13, 14]]
        logprobs = [[[-0.5], [-0.25], [-0.125]], [[-1.0], [-2.0]]]
        return prompts, completions, logprobs, None

    def sync_weights(self):
        self.calls.append(("sync_weights",))


def test_vllm_engine_converts_trl_outputs():
    fake = FakeGeneration()
    engine = VLLMEngine(None, None, SamplingParams(max_new_tokens=2, stop_token_ids=(2,)),
                        accelerator=None, generation=fake)
    gens = engine.generate([[1, 2, 3], [4]])
    assert fake.calls[0] == ("generate", [[1, 2, 3], [4]], None, 1)
    assert gens == [Generation([11, 12, 2], [-0.5, -0.25, -0.125], "stop"),
                    Generation([13, 14], [-1.0, -2.0], "length")]
    engine.sync_weights()
    assert fake.calls[-1] == ("sync_weights",)


class FakeVLLMClient:
    """trl.generation.vllm_client.VLLMClient's weight-sync surface, recording calls."""

    def __init__(self):
        self.calls = []

    def update_named_params(self, metadata, named_params):
        self.calls.append(("update_named_params", metadata,
                           [(name, tensor.clone()) for name, tensor in named_params]))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def _trl_generation(mode, model, **attrs):
    """TRL's real VLLMGeneration object, built without starting vLLM (its __init__ needs CUDA)."""
    from types import SimpleNamespace

    from trl.distributed import DistributedBackend
    from trl.generation.vllm_generation import VLLMGeneration

    gen = object.__new__(VLLMGeneration)
    accelerator = SimpleNamespace(is_main_process=True,  # a single CPU process, as accelerate describes it
                                  state=SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None))
    gen.model, gen.accelerator, gen._dist = model, accelerator, DistributedBackend(accelerator)
    gen.mode, gen.enable_sleep_mode, gen._weight_metadata = mode, False, None
    for key, value in attrs.items():
        setattr(gen, key, value)
    return gen


def test_vllm_server_weight_sync_sends_every_parameter_then_resets_cache(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    client = FakeVLLMClient()
    engine = VLLMEngine(model, None, SamplingParams(stop_token_ids=(2,)), accelerator=None,
                        generation=_trl_generation("server", model, vllm_client=client))
    with torch.no_grad():  # an optimiser update
        model.model.norm.weight.add_(1.0)
    engine.sync_weights()
    assert [c[0] for c in client.calls] == ["update_named_params", "reset_prefix_cache"]
    _, metadata, sent = client.calls[0]
    params = dict(model.named_parameters())
    assert [name for name, _, _ in metadata] == list(params) == [name for name, _ in sent]
    assert all(dtype == "float32" and shape == list(params[name].shape) for name, dtype, shape in metadata)
    sent = dict(sent)
    assert torch.equal(sent["model.norm.weight"], params["model.norm.weight"])
    assert float(sent["model.norm.weight"].mean()) == pytest.approx(2.0)


def test_vllm_colocate_weight_sync_loads_weights_into_the_engine(tiny_model_dir):
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded, resets = [], []
    runner_model = SimpleNamespace(load_weights=lambda weights: loaded.extend(name for name, _ in weights))
    llm = SimpleNamespace(
        llm_engine=SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=SimpleNamespace(model=runner_model)))),
        reset_prefix_cache=lambda: resets.append(True))
    engine = VLLMEngine(model, None, SamplingParams(stop_token_ids=(2,)), accelerator=None,
                        generation=_trl_generation("colocate", model, llm=llm))
    engine.sync_weights()
    assert loaded == [name for name, _ in model.named_parameters()]
    assert resets == [True]


def test_repeated_prompts_are_prefilled_once_and_sampled_independently(tiny):
    model, tok = tiny
    sampling = SamplingParams(max_new_tokens=10, temperature=0.9, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("transformers", model, tok, sampling)
    a, b = _prompt(tok, "the rider was rude"), _prompt(tok, "my soup is cold and the order is late")
    prompts = [a, a, a, b, b]
    torch.manual_seed(0)
    gens = engine.generate(prompts)
    assert len({tuple(g.token_ids) for g in gens[:3]}) > 1  # G samples of one prompt differ
    for prompt, gen in zip(prompts, gens):
        expected = _forward_logprobs(model, prompt, gen.token_ids, 0.9)
        assert torch.allclose(expected, torch.tensor(gen.logprobs), atol=1e-4)
    greedy = make_engine("transformers", model, tok, SamplingParams(max_new_tokens=10, greedy=True,
                                                                   stop_token_ids=stop_token_ids_for(tok)))
    shared = greedy.generate(prompts)
    assert [g.token_ids for g in shared] == [greedy.generate([p])[0].token_ids for p in prompts]


def test_rows_still_writing_continue_alone_and_the_next_turn_reuses_every_row(tiny):
    """Once at most half of a batch is still writing, the engine ends the ``generate`` call and
    continues those rows alone, in a smaller one; the next turn continues rows of both calls from the
    cache (only new tokens are fed). Every recorded log-prob is that of a full forward pass over the
    dialogue: each sampled token saw exactly its dialogue, wherever its row was computed."""
    model, tok = tiny
    texts = ["hello", "x", "the rider was rude", "my soup is cold", "refund please", "where is my order",
             "thanks", "the box was empty"]
    prompts = [_prompt(tok, t) for t in texts]
    stops = tuple(range(3, len(tok), 6))  # a sixth of the vocabulary: turns end after a few tokens or many
    sampling = SamplingParams(max_new_tokens=16, temperature=1.5, stop_token_ids=stops)
    calls, widths = [], []
    original_generate = model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original_generate(*args, **kwargs)

    model.generate = counting_generate  # a hook, not a wrapper, for forward: generate reads its signature
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        for seed in range(10):  # the first seed whose turn ends unevenly enough to compact
            engine = make_engine("transformers", model, tok, sampling)
            calls.clear()
            torch.manual_seed(seed)
            first = engine.generate(prompts)
            if len(calls) > 1:
                break
        assert len(calls) > 1 and all(2 * later <= earlier for earlier, later in zip(calls, calls[1:])), calls
        user = tok("<|im_end|>\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        second_prompts = [p + g.token_ids + user for p, g in zip(prompts, first)]
        widths.clear()
        second = engine.generate(second_prompts)
        assert max(widths) <= len(user) + 1  # every row came from the cache: no prompt was fed again
    finally:
        del model.generate
        hook.remove()
    for turn_prompts, gens in ((prompts, first), (second_prompts, second)):
        for prompt, gen in zip(turn_prompts, gens):
            expected = _forward_logprobs(model, prompt, gen.token_ids, 1.5)
            assert torch.allclose(expected, torch.tensor(gen.logprobs), atol=1e-4)
            assert not set(gen.token_ids[:-1]) & set(stops)  # a turn ends at its first stop token
            assert gen.finish_reason == ("stop" if gen.token_ids[-1] in stops else "length")
            assert len(gen.token_ids) == 16 or gen.finish_reason == "stop"


def test_growing_cache_layer_appends_in_place_and_holds_what_dynamic_cache_holds():
    """``GrowingLayer`` keeps exactly the keys and values transformers' ``DynamicLayer`` keeps, after a
    prefill, decode steps, a batch selection and a crop, but a decode step writes into the existing
    buffer (no copy of the cache) until it is full."""
    from transformers import DynamicCache

    from cmpo.engines.kv_cache import GrowingLayer, new_cache

    torch.manual_seed(0)
    grow, plain = new_cache(), DynamicCache()
    steps = [torch.randn(3, 2, 100, 8)] + [torch.randn(3, 2, 1, 8) for _ in range(80)]
    pointers = set()
    for kv in steps:
        keys, values = grow.update(kv, -kv, 0)
        plain.update(kv, -kv, 0)
        pointers.add(grow.layers[0]._key_buffer.data_ptr())
        assert torch.equal(keys, plain.layers[0].keys) and torch.equal(values, plain.layers[0].values)
    assert isinstance(grow.layers[0], GrowingLayer)
    assert len(pointers) == 2  # the first buffer holds 100 + 64 positions; one growth for 180
    assert grow.get_seq_length() == plain.get_seq_length() == 180
    for cache in (grow, plain):
        cache.batch_select_indices(torch.tensor([2, 0]))
        cache.crop(-5)
    for kv in [torch.randn(2, 2, 1, 8) for _ in range(3)]:
        keys, values = grow.update(kv, -kv, 0)
        plain.update(kv, -kv, 0)
        assert torch.equal(keys, plain.layers[0].keys) and torch.equal(values, plain.layers[0].values)
    assert grow.get_seq_length() == 178


def test_engine_caches_append_in_place_and_keep_other_layer_types(tiny):
    from transformers import AutoConfig
    from transformers.cache_utils import DynamicSlidingWindowLayer

    from cmpo.engines.kv_cache import GrowingLayer, new_cache

    model, _ = tiny
    assert all(type(layer) is GrowingLayer for layer in new_cache(model.config).layers)
    config = AutoConfig.for_model("qwen2", num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"],
                                  sliding_window=16, use_sliding_window=True)
    kinds = [type(layer) for layer in new_cache(config).layers]
    assert kinds == [GrowingLayer, DynamicSlidingWindowLayer]


class FakePeerProcesses:
    """accelerate's collectives as seen by process 0 of 2, whose peer makes ``peer_calls`` more
    generation calls with ``peer_prompts`` prompts each."""

    num_processes, device = 2, "cpu"

    def __init__(self, peer_calls, peer_prompts):
        self.peer_calls, self.peer_prompts = peer_calls, peer_prompts

    def reduce(self, tensor, reduction):
        return tensor + (1.0 if self.peer_calls > 0 else 0.0)

    def gather(self, tensor):
        self.peer_calls -= 1
        return torch.cat([tensor, torch.tensor([self.peer_prompts])])


class EchoGeneration(FakeGeneration):
    def generate(self, prompts, images, num_generations):
        self.calls.append(("generate", [list(p) for p in prompts]))
        return prompts, [[11, 12, 2]] * len(prompts), [[[-0.5]] * 3] * len(prompts), None


def test_collective_engine_pads_calls_to_its_peers():
    fake = EchoGeneration()
    engine = VLLMEngine(None, None, SamplingParams(stop_token_ids=(2,)), accelerator=FakePeerProcesses(1, 5),
                        generation=fake, mode="server")
    assert engine.collective
    gens = engine.generate([[1], [2, 3], [4]])
    assert len(gens) == 3 and fake.calls[0][1] == [[1], [2, 3], [4], [0], [0]]  # 2 filler prompts
    assert engine.continue_rollout(False) is False  # the peer is done too
    assert not VLLMEngine(None, None, SamplingParams(stop_token_ids=(2,)), accelerator=FakePeerProcesses(1, 5),
                          generation=fake, mode="colocate").collective  # colocate, no TP: independent


def test_rollout_keeps_calling_a_collective_engine_until_every_process_is_done(tiny_model_dir):
    from transformers import AutoTokenizer

    from cmpo.rollout import RolloutCollector
    from tests.toy_text_env import register_toy_env

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fake = EchoGeneration()
    engine = VLLMEngine(None, tok, SamplingParams(stop_token_ids=stop_token_ids_for(tok)),
                        accelerator=FakePeerProcesses(4, 3), generation=fake, mode="server")
    episodes = RolloutCollector(register_toy_env(), engine, tok, group_size=2,
                                env_kwargs={"max_turns": 2}).collect([0])
    assert [ep.num_turns for ep in episodes] == [2, 2]
    eos = tok.eos_token_id
    assert [len(c[1]) for c in fake.calls] == [3, 3, 3, 3]  # 4 calls, as many as the peer's
    assert fake.calls[2][1] == fake.calls[3][1] == [[eos]] * 3  # this process had nothing left
